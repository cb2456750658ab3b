"""Mail end to end: the real services on a throwaway vhost, a real SMTP server (aiosmtpd) and plain HTTP.

The stack (all five services) runs with a short retry window (MAIL_RETRY_SECONDS=10, base 0.5 s) and SMTP_TIMEOUT=3 s,
so a claim left by a killed mailer runs out after 11 s. Import mails come from real imports uploaded through the
gateway (a sample zipped on the fly, a broken archive built here); redelivery is simulated by publishing an event
again into the stack's vhost.
"""

from __future__ import annotations

import hashlib
import html
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import delete, select

from services.api_gateway.dependencies import MAIL_QUEUES
from shared import contracts
from shared.models import events as m
from shared.models.mailer import MailDelivery
from tests.e2e.test_export_e2e import export
from tests.support.e2e import Env, SystemBase, add_synthetic_event, stack_for
from tests.support.event_tap import EventTap
from tests.support.hostile_archives import base_files, encode, write_zip
from tests.support.import_helpers import submit_ok, zip_folder
from tests.support.rabbit import queue_info
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_until
from tools.stack import Stack

NAME = "Tom & Jerry's <Open> \"Conf\""
EXPORT_QUEUE = MAIL_QUEUES[(contracts.EXPORTER, contracts.EXPORT_COMPLETED)]
IMPORT_QUEUE = MAIL_QUEUES[(contracts.IMPORTER, contracts.IMPORT_COMPLETED)]
IMPORT_FAILED_QUEUE = MAIL_QUEUES[(contracts.IMPORTER, contracts.IMPORT_FAILED)]
MAIL_ENV = {"SMTP_TIMEOUT": "3", "MAIL_RETRY_SECONDS": "10", "MAIL_RETRY_BASE": "0.5",
            "MAIL_FROM": "Event Platform <platform@example.org>", "MAIL_REPLY_TO": "help@example.org",
            "EVENT_URL_TEMPLATE": "https://frontend.example/e/{id}"}


@dataclass
class System(SystemBase):
    stack: Stack
    smtp: SmtpServer
    tap: EventTap
    event_id: int

    def publish(self, source: str, event_type: str, payload: dict, times: int = 1) -> None:
        dispatch = event_dispatcher({"AMQP_URI": self.env.env["AMQP_URI"], "serializer": "json"})
        for _ in range(times):
            dispatch(source, event_type, payload)


def delivery(env: Env, task_id: str, kind: str = contracts.EXPORT_COMPLETED) -> MailDelivery | None:
    with env.db() as session:
        return session.scalar(select(MailDelivery).where(MailDelivery.task_id == task_id,
                                                            MailDelivery.kind == kind))


def wait_delivery(env: Env, task_id: str, check: Callable[[MailDelivery], bool], timeout: float = 30,
                  kind: str = contracts.EXPORT_COMPLETED) -> MailDelivery:
    def probe():
        row = delivery(env, task_id, kind)
        return row if row is not None and check(row) else None
    return wait_until(f"delivery {task_id}", probe, timeout)


def acked(vhost: str, queue: str) -> int:
    return ((queue_info(vhost, queue) or {}).get("message_stats") or {}).get("ack", 0)


def completed_payload(system: System, email: str = "organizer@example.org") -> dict:
    return contracts.make_payload(contracts.EXPORT_COMPLETED, task_id=str(uuid.uuid4()), event_id=system.event_id,
                                  requested_by={"id": system.users["organizer"], "email": email},
                                  key="exports/x/event.zip", size=3, sha256="0" * 64,
                                  download_url="http://127.0.0.1:9/objects/x?expires=1&signature=0",
                                  expires_at="2030-01-01T00:00:00Z", warnings=[], warnings_total=0)


def import_completed_payload(system: System) -> dict:
    event_id = system.event_id
    return contracts.make_payload(contracts.IMPORT_COMPLETED, task_id=str(uuid.uuid4()), event_id=event_id,
                                  requested_by={"id": system.users["organizer"], "email": "organizer@example.org"},
                                  id=event_id, event_name=NAME, url=f"{system.url}/v1/events/{event_id}",
                                  counts={"event": 1, "sessions": 20}, warnings=[], warnings_total=0)


def plain(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def parts(msg) -> tuple[str, str]:
    """The plain-text and the HTML part of a notification (both must be there)."""
    assert msg.get_content_type() == "multipart/alternative"
    text, page = plain(msg), msg.get_body(("html",)).get_content()
    return text.replace("\r\n", "\n"), page.replace("\r\n", "\n")  # (sent with SMTP line endings)


def wait_handled(system: System, queue: str, before: int, count: int = 1) -> None:
    """Until the mailer has acknowledged ``count`` more deliveries on ``queue`` than ``before``."""
    wait_until(f"{count} deliveries handled on {queue}", lambda: acked(system.env.vhost, queue) >= before + count)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    root = tmp_path_factory.mktemp("mailer_e2e")
    smtp = SmtpServer(root / "smtp")
    smtp.start()
    try:  # a stack that fails to start is cleaned up too (no stray processes or vhosts)
        with stack_for(root, {"admin": True, "organizer": False}, SMTP_PORT=str(smtp.port), **MAIL_ENV) as run:
            event_id = run.event("organizer", sessions=20)
            with run.env.db() as session:
                session.get(m.Event, event_id).name = NAME
                session.commit()
            tap = EventTap(run.env.env["AMQP_URI"], contracts.MAILER)
            yield System(env=run.env, users=run.users, stack=run.start(), smtp=smtp, tap=tap, event_id=event_id)
    finally:
        smtp.stop()


@pytest.fixture
def system_ok(system):
    """The system with an accepting, running SMTP server and a running mailer (tests may change both)."""
    system.smtp.set_mode("accept")
    if system.smtp.proc is None:
        system.smtp.start()
    if not system.stack.running("mailer"):
        system.stack.start("mailer")
    return system


@pytest.fixture(scope="module")
def finished_export(system):
    organizer = system.client("organizer")
    task_url = export(organizer, system.event_id)
    task = organizer.wait_task(task_url)
    assert task["state"] == "SUCCESS", task
    return task_url.rsplit("/", 1)[1], task["result"]


# --- the mail and its link -------------------------------------------------------------------------------------------

def test_export_mail_link_downloads_the_archive_without_credentials(system_ok, finished_export):
    system = system_ok
    task_id, result = finished_export
    [mail] = system.smtp.wait_messages(task_id)
    assert mail["Subject"] == f"Event {NAME} (#{system.event_id}) has been exported"
    assert mail["To"] == "organizer@example.org"
    assert mail["Reply-To"] == "help@example.org"
    text, html = plain(mail), mail.get_body(("html",)).get_content()
    # The only links of the mail, in either part, are the download link: nothing that needs a token.
    links = [u for u in re.findall(r"https?://\S+", text) if u.rstrip(").") != system.url]
    assert links == [result["download_url"]]
    assert [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]*)"', html)] == links
    assert f"GET /v1/events/{system.event_id}/exports/{task_id}" in text  # how to get a fresh link, named
    assert "Tom &amp; Jerry&#x27;s &lt;Open&gt; &quot;Conf&quot;" in html and "<Open>" not in html

    r = requests.get(links[0], timeout=30)  # plain HTTP, no credentials, no session
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == result["sha256"]
    assert len(r.content) == result["size"]

    sent = system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]
    assert sent["kind"] == contracts.EXPORT_COMPLETED and sent["recipient"] == "organizer@example.org"
    assert sent["message_id"] == mail["Message-ID"].strip()


def test_an_expired_link_says_so_clearly(system_ok, finished_export):
    _task_id, result = finished_export
    key = result["key"]
    with ClusterRpcProxy({"AMQP_URI": system_ok.env.env["AMQP_URI"]}, timeout=10) as rpc:
        url = rpc.storage.signed_url(key, method="GET", ttl=1, filename="event.zip")

    assert requests.get(url, timeout=10).status_code in (200, 403)  # a genuine link, valid for a second

    def expired():
        r = requests.get(url, timeout=10)
        return r.json() if r.status_code == 403 else None  # (a 403 Response is falsy)
    error = wait_until("link expiry", expired, timeout=10)
    assert error["error"] == {"code": "link_expired",
                              "message": "This link has expired. Request a new download link."}


def test_an_export_failure_mail_names_the_problem(system_ok):
    system = system_ok
    doomed = add_synthetic_event(system.env, system.users["organizer"], sessions=2)
    organizer = system.client("organizer")
    system.stack.stop("exporter")
    try:
        task_url = export(organizer, doomed)
        with system.env.db() as session:  # deleted after the request, before the exporter gets to it
            session.execute(delete(m.Event).where(m.Event.id == doomed))
            session.commit()
    finally:
        system.stack.start("exporter")
    task = organizer.wait_task(task_url)
    assert task["state"] == "FAILURE" and task["result"]["code"] == "event_not_found"
    task_id = task_url.rsplit("/", 1)[1]
    [mail] = system.smtp.wait_messages(task_id)
    assert mail["Subject"] == f"Export of event #{doomed} failed"
    text = plain(mail)
    assert "no longer exists; it may have been deleted after the export was requested" in text
    assert "Traceback" not in text


# --- import mails, from real imports -------------------------------------------------------------------------------

def unknown_track_archive(tmp_path) -> bytes:
    """A valid legacy archive but for session 1, whose track (99) is not in ``tracks``."""
    files = base_files()
    files["sessions"][0]["track"] = {"id": 99, "name": "Ghost"}
    return write_zip(tmp_path / "ghost_track.zip", encode(files)).read_bytes()


def import_sample(system: System, samples_dir: Path, name: str, queue: str) -> tuple[dict, int]:
    """The organizer imports the legacy sample ``name`` (skipped when absent): its terminal task, and how many
    deliveries the mailer had acknowledged on ``queue`` before."""
    folder = samples_dir / "open_event" / "legacy" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    organizer = system.client("organizer")
    before = acked(system.env.vhost, queue)
    return organizer.wait_task(submit_ok(organizer, zip_folder(folder), f"{name}.zip"), timeout=180), before


def test_an_imported_sample_gives_one_mail_with_link_counts_and_warnings(system_ok, samples_dir):
    system = system_ok
    task, before = import_sample(system, samples_dir, "OTS16", IMPORT_QUEUE)
    assert task["state"] == "SUCCESS", task
    organizer = system.client("organizer")
    result, task_id = task["result"], task["id"]

    [mail] = system.smtp.wait_messages(task_id)
    assert result["event_name"] == "Open Tech Summit"
    assert mail["Subject"] == f"Event {result['event_name']} (#{result['id']}) has been imported"
    assert mail["To"] == "organizer@example.org"
    assert mail["Message-ID"].strip().startswith(f"<{contracts.IMPORT_COMPLETED}.{task_id}@")
    text, page = parts(mail)
    # The event's link (EVENT_URL_TEMPLATE: the frontend), in both parts; not the API's, which needs a token.
    assert result["url"] == f"{system.url}/v1/events/{result['id']}"
    frontend = f"https://frontend.example/e/{result['id']}"
    assert re.findall(r"https?://\S+", text) == [frontend]
    assert re.findall(r'href="([^"]*)"', page) == [frontend]
    # Its record counts: every one the importer reports, as the API reports them too.
    counts = result["counts"]
    assert counts["sessions"] > 0 and counts["speakers"] > 0
    api_counts = organizer.get(f"/v1/events/{result['id']}").json()["counts"]
    assert {k: counts[k] for k in api_counts} == api_counts
    for key, value in counts.items():
        label = key.replace("_", " ")
        assert f"\n  {label}: {value}\n" in text, (label, value)
        assert f"<tr><td>{html.escape(label)}</td><td>{value}</td></tr>" in page, (label, value)
    # Its warnings: how many, and the fake audio file (an XML error page saved as session_44.mp3) by record.
    fake = next(w for w in result["warnings"] if str(w.get("url", "")).endswith("session_44.mp3"))
    assert fake["code"] == "media_invalid" and fake["file"] == "sessions" and fake["field"] == "audio"
    assert f"{result['warnings_total']} warning(s)" in text and f"{result['warnings_total']} warning(s)" in page
    line = next(x for x in text.splitlines() if "session_44.mp3" in x)
    assert f"file sessions, record {fake['record_id']}, field audio: " in line
    assert "session_44.mp3" in page
    assert "Traceback" not in text

    sent = system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]
    assert (sent["kind"], sent["event_id"], sent["recipient"]) == (contracts.IMPORT_COMPLETED, result["id"],
                                                                   "organizer@example.org")
    wait_handled(system, IMPORT_QUEUE, before)
    assert len(system.smtp.messages(task_id)) == 1  # exactly one, and no failure mail beside it
    row = delivery(system.env, task_id, contracts.IMPORT_COMPLETED)
    assert (row.state, row.attempts, row.event_id) == ("sent", 1, result["id"])
    assert delivery(system.env, task_id, contracts.IMPORT_FAILED) is None


def _assert_failure_mail(system: System, task: dict, before: int, filename: str) -> str:
    """The one ``Import of event failed`` mail of a failed import task; returns its plain text."""
    task_id, result = task["id"], task["result"]
    [mail] = system.smtp.wait_messages(task_id)
    assert mail["Subject"] == f"Import of event failed: {filename}"
    assert mail["To"] == "organizer@example.org"
    assert mail["Message-ID"].strip().startswith(f"<{contracts.IMPORT_FAILED}.{task_id}@")
    text, page = parts(mail)
    assert f'The import of your archive "{filename}" failed; nothing was imported.' in text
    assert "nothing was imported" in page and filename in page
    assert result["message"] in text and html.escape(result["message"]) in page
    for part in (text, page):  # a message for people: no stack trace, no source paths
        assert "Traceback" not in part
        assert not re.search(r'File "[^"]+", line \d+', part)
        assert ".py" not in part
    assert system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]["kind"] == contracts.IMPORT_FAILED
    wait_handled(system, IMPORT_FAILED_QUEUE, before)
    assert len(system.smtp.messages(task_id)) == 1
    row = delivery(system.env, task_id, contracts.IMPORT_FAILED)
    assert (row.state, row.attempts) == ("sent", 1)
    assert delivery(system.env, task_id, contracts.IMPORT_COMPLETED) is None
    return text


def test_an_import_failing_on_a_record_mails_the_file_and_record(system_ok, tmp_path):
    system = system_ok
    organizer = system.client("organizer")
    before = acked(system.env.vhost, IMPORT_FAILED_QUEUE)
    task = organizer.wait_task(submit_ok(organizer, unknown_track_archive(tmp_path), "ghost_track.zip"))
    assert task["state"] == "FAILURE", task
    result = task["result"]
    assert (result["code"], result["file"], result["record_id"]) == ("unknown_reference", "sessions", 1), result
    text = _assert_failure_mail(system, task, before, "ghost_track.zip")
    assert "File sessions, ID 1: track 99 does not exist" in text
    assert "Where: File sessions, record 1" in text


def test_an_import_of_invalid_json_mails_the_file(system_ok, samples_dir):
    system = system_ok
    task, before = import_sample(system, samples_dir, "FOSSASIA11", IMPORT_FAILED_QUEUE)
    assert task["state"] == "FAILURE", task
    result = task["result"]
    assert result["code"] == "invalid_json" and result["file"], result
    text = _assert_failure_mail(system, task, before, "FOSSASIA11.zip")
    assert f"Where: File {result['file']}" in text
    assert f"File {result['file']}" in result["message"]


# --- exactly once --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "kind", "make"), [
    (contracts.EXPORTER, contracts.EXPORT_COMPLETED, completed_payload),
    (contracts.IMPORTER, contracts.IMPORT_COMPLETED, import_completed_payload),
], ids=["export", "import"])
def test_a_redelivered_event_gives_one_mail(system_ok, source, kind, make):
    system = system_ok
    queue = MAIL_QUEUES[(source, kind)]
    payload = make(system)
    task_id = payload["task_id"]
    before = acked(system.env.vhost, queue)
    system.publish(source, kind, payload, times=2)  # two deliveries at once
    [mail] = system.smtp.wait_messages(task_id)
    assert mail["Message-ID"].strip().startswith(f"<{kind}.{task_id}@")
    wait_handled(system, queue, before, 2)
    system.publish(source, kind, payload)  # and once more, after the mail went out
    wait_handled(system, queue, before, 3)
    assert len(system.smtp.messages(task_id)) == 1
    row = delivery(system.env, task_id, kind)
    assert (row.state, row.attempts) == ("sent", 1)
    assert system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]["kind"] == kind


def test_a_mailer_killed_during_data_never_sends_a_second_mail(system_ok):
    system = system_ok
    payload = completed_payload(system)
    task_id = payload["task_id"]
    since = len(system.smtp.log_lines())
    system.smtp.set_mode("stall_data")  # the server stores the mail, then holds back its "250 OK"
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
    system.smtp.wait_log(f"DATA stalled <{contracts.EXPORT_COMPLETED}.{task_id}", since=since)
    system.stack.stop("mailer", kill=True)
    system.smtp.set_mode("accept")
    system.stack.start("mailer")
    # The restarted mailer gets the unacknowledged event again, finds the row, and after the lease records the
    # outcome as uncertain instead of sending a second copy.
    row = wait_delivery(system.env, task_id, lambda r: r.state == "uncertain", timeout=45)
    assert "not sent again" in row.last_error
    failed = system.tap.wait_for(task_id, contracts.MAIL_FAILED)[0]
    assert failed["reason"].startswith("delivery uncertain")
    wait_until("event redelivered and handled", lambda: (queue_info(system.env.vhost, EXPORT_QUEUE) or {})
               .get("messages") == 0)
    assert len(system.smtp.messages(task_id)) == 1


def test_a_mailer_killed_before_data_sends_exactly_once_after_restart(system_ok):
    system = system_ok
    payload = completed_payload(system)
    task_id = payload["task_id"]
    since = len(system.smtp.log_lines())
    system.smtp.set_mode("stall_rcpt")  # nothing stored yet: the mailer dies mid-handshake
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
    system.smtp.wait_log("RCPT stalled organizer@example.org", since=since)
    system.stack.stop("mailer", kill=True)
    system.smtp.set_mode("accept")
    system.stack.start("mailer")
    row = wait_delivery(system.env, task_id, lambda r: r.state == "sent", timeout=45)
    assert row.attempts == 2  # the dead claim, then one real send once its lease ran out
    assert len(system.smtp.wait_messages(task_id)) == 1
    system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]


# --- SMTP trouble --------------------------------------------------------------------------------------------------

@contextmanager
def smtp_down(system: System) -> Iterator[str]:
    """An export's mail published while the SMTP server is down (back up when the block ends); its task id."""
    system.smtp.stop()
    payload = completed_payload(system)
    try:
        system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
        yield payload["task_id"]
    finally:
        system.smtp.start()


def test_smtp_down_for_a_while_still_ends_in_one_mail(system_ok):
    system = system_ok
    with smtp_down(system) as task_id:
        row = wait_delivery(system.env, task_id, lambda r: r.state == "pending" and r.attempts >= 2)
        assert "refused the connection" in row.last_error
    assert len(system.smtp.wait_messages(task_id, timeout=20)) == 1
    assert wait_delivery(system.env, task_id, lambda r: r.state == "sent").attempts >= 3
    system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]


def test_smtp_down_past_the_retry_window_is_recorded_and_announced(system_ok):
    system = system_ok
    with smtp_down(system) as task_id:
        row = wait_delivery(system.env, task_id, lambda r: r.state == "failed", timeout=40)
    assert "gave up after" in row.last_error
    failed = system.tap.wait_for(task_id, contracts.MAIL_FAILED)[0]
    assert failed["attempts"] == row.attempts >= 3 and "gave up" in failed["reason"]
    # A later mail goes out; the failed one stays failed for good.
    barrier = completed_payload(system)
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, barrier)
    system.smtp.wait_messages(barrier["task_id"])
    assert system.smtp.messages(task_id) == []
    assert delivery(system.env, task_id).state == "failed"


def test_a_permanent_refusal_fails_at_once(system_ok):
    system = system_ok
    system.smtp.set_mode("550")
    payload = completed_payload(system)
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
    row = wait_delivery(system.env, payload["task_id"], lambda r: r.state == "failed")
    assert row.attempts == 1 and "550" in row.last_error
    assert "550" in system.tap.wait_for(payload["task_id"], contracts.MAIL_FAILED)[0]["reason"]


def admin_entry(system: System, task_id: str) -> dict:
    """The task's line of the admin mail log, as an admin sees it over HTTP."""
    entries = system.client("admin").get("/v1/admin/mails?limit=200").json()["data"]
    return next(e for e in entries if e["task_id"] == task_id)


def test_a_message_refused_after_data_with_554_ends_failed_never_sent(system_ok):
    system = system_ok
    system.smtp.set_mode("data_554")
    payload = completed_payload(system)
    task_id = payload["task_id"]
    since = len(system.smtp.log_lines())
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
    row = wait_delivery(system.env, task_id, lambda r: r.state not in ("pending", "sending", "transmitting"))
    assert (row.state, row.attempts, row.sent_at) == ("failed", 1, None)
    assert "554 5.7.1 Message rejected as spam" in row.last_error
    system.smtp.wait_log(f"DATA refused 554 <{contracts.EXPORT_COMPLETED}.{task_id}", since=since)
    failed = system.tap.wait_for(task_id, contracts.MAIL_FAILED)[0]
    assert "554" in failed["reason"] and failed["attempts"] == 1
    assert system.tap.of(task_id, contracts.MAIL_SENT) == []
    entry = admin_entry(system, task_id)
    assert (entry["state"], entry["attempts"], entry["next_retry_at"]) == ("failed", 1, None)
    assert "554 5.7.1 Message rejected as spam" in entry["last_error"]
    assert system.smtp.messages(task_id) == []


def test_a_message_deferred_after_data_with_451_is_retried_then_delivered(system_ok):
    system = system_ok
    system.smtp.set_mode("data_451")
    payload = completed_payload(system)
    task_id = payload["task_id"]
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
    row = wait_delivery(system.env, task_id, lambda r: r.state == "pending" and r.attempts >= 1)
    assert "451 4.7.1 Message deferred" in row.last_error
    entry = admin_entry(system, task_id)
    assert entry["state"] in ("pending", "sending", "transmitting") and "451" in entry["last_error"]
    assert entry["state"] != "pending" or entry["next_retry_at"] is not None
    system.smtp.set_mode("accept")
    row = wait_delivery(system.env, task_id, lambda r: r.state == "sent")
    assert row.attempts >= 2 and row.last_error is None
    assert len(system.smtp.wait_messages(task_id)) == 1
    system.tap.wait_for(task_id, contracts.MAIL_SENT)[0]


def health(system: System) -> tuple[int, dict]:
    r = requests.get(system.url + "/health", timeout=30)
    return r.status_code, r.json()


def test_health_shows_a_mail_path_that_delivers_nothing(system_ok):
    system = system_ok
    barrier = completed_payload(system)  # a delivered mail first: what came before does not count
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, barrier)
    wait_delivery(system.env, barrier["task_id"], lambda r: r.state == "sent")
    assert health(system)[0] == 200

    system.smtp.set_mode("data_554")
    spam = completed_payload(system)
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, spam)
    wait_delivery(system.env, spam["task_id"], lambda r: r.state == "failed")
    system.smtp.set_mode("data_451")
    deferred = completed_payload(system)
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, deferred)
    wait_delivery(system.env, deferred["task_id"], lambda r: r.attempts >= 1 and r.last_error is not None)

    status, report = health(system)
    assert status == 503 and report["status"] == "degraded", report
    mailer = report["services"]["mailer"]
    assert mailer["ok"] is True and mailer["status"] == "degraded"  # running, but delivering nothing
    assert "delivery attempt(s) failed since the last delivered mail" in mailer["reason"]
    assert any(line.startswith("mailer: ") and "failed since the last delivered mail" in line
               for line in report["reasons"])
    delivery = mailer["delivery"]
    assert delivery["smtp"]["ok"] is True and delivery["failed_attempts_since_last_success"] >= 2
    assert delivery["last_success"]["task_id"] == barrier["task_id"]
    assert delivery["last_failure"]["reason"].startswith("message refused after DATA: ")
    assert all(report["services"][name]["ok"] for name in ("storage", "exporter", "importer"))

    system.smtp.set_mode("accept")  # mail goes out again: healthy again
    again = completed_payload(system)
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, again)
    wait_delivery(system.env, again["task_id"], lambda r: r.state == "sent")
    wait_delivery(system.env, deferred["task_id"], lambda r: r.state in ("sent", "failed"))
    status, report = health(system)
    assert status == 200 and report["status"] == "ok" and "reasons" not in report, report
    assert report["services"]["mailer"]["delivery"]["failed_attempts_since_last_success"] == 0


def test_health_shows_a_mail_server_that_is_down(system_ok):
    system = system_ok
    system.smtp.stop()
    try:
        status, report = health(system)
    finally:
        system.smtp.start()
    assert status == 503, report
    mailer = report["services"]["mailer"]
    assert mailer["ok"] is True and mailer["status"] == "degraded"
    assert "does not answer a probe" in mailer["reason"] and "refused the connection" in mailer["reason"]
    assert health(system)[0] == 200


def test_an_invalid_recipient_is_refused_up_front(system_ok):
    system = system_ok
    since = len(system.smtp.log_lines())
    payload = completed_payload(system, email="organizer at example dot org")
    system.publish(contracts.EXPORTER, contracts.EXPORT_COMPLETED, payload)
    row = wait_delivery(system.env, payload["task_id"], lambda r: r.state == "failed")
    assert row.attempts == 0 and "not a valid email address" in row.last_error
    failed = system.tap.wait_for(payload["task_id"], contracts.MAIL_FAILED)[0]
    assert failed["attempts"] == 0
    assert not any("organizer at example" in line for line in system.smtp.log_lines()[since:])


# --- the admin's view ----------------------------------------------------------------------------------------------

def test_admins_see_the_mail_log_and_nobody_else_does(system_ok, finished_export):
    system = system_ok
    system.smtp.wait_messages(finished_export[0])
    r = requests.get(system.url + "/v1/admin/mails", timeout=10)
    assert r.status_code == 401
    assert system.client("organizer").get("/v1/admin/mails").status_code == 403
    admin = system.client("admin")
    assert admin.get("/v1/admin/mails?limit=0").status_code == 400
    assert admin.get("/v1/admin/mails?limit=x").status_code == 400
    everything = admin.get("/v1/admin/mails").json()["data"]
    assert len(everything) >= 2
    ids = [d["id"] for d in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    mine = next(d for d in everything if d["task_id"] == finished_export[0])
    assert mine["state"] == "sent" and mine["kind"] == contracts.EXPORT_COMPLETED and mine["recipient"]
    assert admin.get("/v1/admin/mails?limit=2").json()["data"] == everything[:2]
    body = admin.get("/v1/admin/mails?limit=200").text
    assert "signature=" not in body and "/objects/" not in body and "message\"" not in body  # no bodies or links


# --- a fresh broker ------------------------------------------------------------------------------------------------

def test_mail_events_published_before_the_mailer_ever_ran_are_kept(tmp_path, system):
    with stack_for(tmp_path, SMTP_PORT=str(system.smtp.port), **MAIL_ENV) as run:
        vhost = run.vhost
        stack = run.start(services=("api_gateway",))
        for queue in MAIL_QUEUES.values():
            wait_until(f"{queue} declared by the gateway", lambda q=queue: queue_info(vhost, q))
        payload = contracts.make_payload(contracts.EXPORT_FAILED, task_id=str(uuid.uuid4()), event_id=12345,
                                         requested_by={"id": 1, "email": "someone@example.org"}, code="storage_error",
                                         message="storage refused the archive")
        event_dispatcher({"AMQP_URI": run.env.env["AMQP_URI"], "serializer": "json"})(
            contracts.EXPORTER, contracts.EXPORT_FAILED, payload)
        queue = MAIL_QUEUES[(contracts.EXPORTER, contracts.EXPORT_FAILED)]
        wait_until("event waiting in the mailer's queue", lambda: (queue_info(vhost, queue) or {}).get("messages"))
        stack.start("mailer")
        [mail] = system.smtp.wait_messages(payload["task_id"])
        assert mail["Subject"] == "Export of event #12345 failed"
        assert "did not accept the archive" in plain(mail)

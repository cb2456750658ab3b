"""The mailer's delivery log and SMTP handling against a real SMTP server and a real database (no broker).

A controllable clock stands in for waiting: retries, leases and the retry window are exercised by moving time forward,
not by sleeping. The e2e suite (test_mailer_e2e.py) repeats the important cases through the running services.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import eventlet
import pytest
from sqlalchemy import select

from services.mailer import delivery_health, outbox
from services.mailer.postman import Postman
from services.mailer.settings import MailSettings
from services.mailer.smtp import SmtpTransport
from shared import contracts
from shared.db import make_engine, make_session_factory
from shared.models import events as m
from shared.models.mailer import MailDelivery
from tests.support.smtp_server import SmtpServer

WHO = {"id": 7, "email": "orga@example.org"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 10, 0, 0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    with SmtpServer(tmp_path_factory.mktemp("smtp")) as server:
        yield server


@pytest.fixture
def db(tmp_path, database_url):
    factory = make_session_factory(make_engine(database_url))
    with factory() as session:
        session.add(m.Event(name="Delivery Test Conf"))
        session.commit()
    return factory


def settings(port: int, **overrides) -> MailSettings:
    values = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", smtp_user=None, smtp_password=None,
                  mail_from="Platform <platform@example.org>", reply_to=None, smtp_timeout=5.0, retry_seconds=600.0,
                  retry_base=10.0)
    return MailSettings(**{**values, **overrides})


@pytest.fixture
def make_postman(db, smtp):
    def make(clock: Clock | None = None, **overrides) -> tuple[Postman, list]:
        published: list[tuple[str, dict]] = []
        s = settings(smtp.port, **overrides)
        postman = Postman(db=db, transport=SmtpTransport(s), settings=s, gateway_url="http://gw",
                          publish=lambda event_type, payload: published.append((event_type, payload)),
                          clock=clock or Clock())
        return postman, published
    smtp.set_mode("accept")
    if smtp.proc is None:
        smtp.start()
    return make


def completed(task_id: str, email: str = WHO["email"]) -> dict:
    return contracts.make_payload(contracts.EXPORT_COMPLETED, task_id=task_id, event_id=1,
                                  requested_by={"id": 7, "email": email},
                                  key="exports/event1/x/event1.zip", size=10, sha256="b" * 64,
                                  download_url="http://storage/objects/x?signature=1",
                                  expires_at="2026-11-22T10:00:00Z", warnings=[], warnings_total=0)


def row(db, task_id: str, kind: str = contracts.EXPORT_COMPLETED) -> MailDelivery:
    with db() as session:
        return session.scalar(select(MailDelivery).where(
            MailDelivery.dedupe_key == outbox.dedupe_key(task_id, kind)))


def new_task() -> str:
    return str(uuid.uuid4())


def notified(make_postman, smtp, mode: str, **settings):
    """A postman on a clock of its own, told of one finished export while the SMTP server is in ``mode``:
    (clock, postman, what it published, the task)."""
    clock = Clock()
    postman, published = make_postman(clock, **settings)
    smtp.set_mode(mode)
    task = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(task))
    return clock, postman, published, task


def test_a_finished_export_is_mailed_once_and_announced_once(make_postman, db, smtp):
    postman, published = make_postman()
    task = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(task))
    postman.notify(contracts.EXPORT_COMPLETED, completed(task))  # the same event delivered again
    [mail] = smtp.wait_messages(task)
    assert mail["Subject"] == "Event Delivery Test Conf (#1) has been exported"
    assert mail["To"] == WHO["email"] and mail["From"] == "Platform <platform@example.org>"
    r = row(db, task)
    assert (r.state, r.attempts, r.announced_at is not None) == ("sent", 1, True)
    assert [e for e, _ in published] == [contracts.MAIL_SENT]
    payload = published[0][1]
    assert payload["task_id"] == task and payload["kind"] == contracts.EXPORT_COMPLETED
    assert payload["message_id"] == r.message_id and payload["recipient"] == WHO["email"]
    assert not contracts.MailSentSchema().validate(payload)


def test_two_senders_racing_for_one_delivery_send_it_once(make_postman, db, smtp):
    clock = Clock()
    first, _ = make_postman(clock)
    second, _ = make_postman(clock)
    smtp.set_mode("stall_rcpt")  # hold the first sender mid-session while the second tries
    task = new_task()
    since = len(smtp.log_lines())
    racer = eventlet.spawn(first.notify, contracts.EXPORT_COMPLETED, completed(task))
    smtp.wait_log("RCPT stalled", since=since)
    assert second.deliver(row(db, task).id) is None  # claimed by the first: not ours
    assert second.run_due() == 0  # the claim's lease has not run out
    smtp.set_mode("accept")
    racer.wait()
    assert len(smtp.wait_messages(task)) == 1
    assert row(db, task).state == "sent"


def test_temporary_refusals_are_retried_with_backoff_until_accepted(make_postman, db, smtp):
    clock, postman, published, task = notified(make_postman, smtp, "451", retry_base=10.0, retry_seconds=600.0)
    r = row(db, task)
    assert (r.state, r.attempts) == ("pending", 1)
    assert r.next_attempt_at == clock.now + timedelta(seconds=10)
    assert "451" in r.last_error
    clock.advance(5)
    assert postman.run_due() == 0  # not due yet
    clock.advance(5)
    assert postman.run_due() == 1
    r = row(db, task)
    assert (r.state, r.attempts) == ("pending", 2)
    assert r.next_attempt_at == clock.now + timedelta(seconds=20)  # doubled
    smtp.set_mode("accept")
    clock.advance(20)
    postman.run_due()
    assert len(smtp.wait_messages(task)) == 1
    r = row(db, task)
    assert (r.state, r.attempts, r.last_error) == ("sent", 3, None)
    assert [e for e, _ in published] == [contracts.MAIL_SENT]


def test_a_server_down_past_the_retry_window_ends_in_a_recorded_failure(make_postman, db, smtp):
    clock = Clock()
    postman, published = make_postman(clock, retry_base=10.0, retry_seconds=60.0)
    smtp.stop()
    try:
        task = new_task()
        postman.notify(contracts.EXPORT_COMPLETED, completed(task))
        while row(db, task).state == "pending":
            clock.advance(15)
            postman.run_due()
            assert clock.now < datetime(2026, 11, 21, 10, 5), "never gave up"
        r = row(db, task)
        assert r.state == "failed" and "gave up after" in r.last_error and "refused the connection" in r.last_error
        # The last attempt happens at the end of the window, not later.
        assert r.updated_at - r.created_at == timedelta(seconds=60)
        [(event_type, payload)] = published
        assert event_type == contracts.MAIL_FAILED and payload["attempts"] == r.attempts >= 4
        assert not contracts.MailFailedSchema().validate(payload)
    finally:
        smtp.start()
    clock.advance(3600)
    assert postman.run_due() == 0  # terminal: never tried again
    assert smtp.messages(task) == []


def test_a_permanent_refusal_fails_at_once(make_postman, db, smtp):
    clock, postman, published, task = notified(make_postman, smtp, "550")
    r = row(db, task)
    assert (r.state, r.attempts) == ("failed", 1)
    assert "550" in r.last_error and "No such mailbox" in r.last_error
    assert [e for e, _ in published] == [contracts.MAIL_FAILED]
    clock.advance(3600)
    assert postman.run_due() == 0


def test_a_permanent_refusal_after_data_fails_with_the_reply_and_is_announced(make_postman, db, smtp):
    # envelope accepted, message body refused with the final reply
    clock, postman, published, task = notified(make_postman, smtp, "data_554")
    r = row(db, task)
    assert (r.state, r.attempts, r.sent_at) == ("failed", 1, None)
    assert "554 5.7.1 Message rejected as spam" in r.last_error
    [(event_type, payload)] = published
    assert event_type == contracts.MAIL_FAILED and "554" in payload["reason"] and payload["attempts"] == 1
    assert not payload["reason"].startswith("delivery uncertain")  # a definite answer, not the DATA-crash window
    assert smtp.messages(task) == []
    clock.advance(3600)
    assert postman.run_due() == 0  # final: never tried again


def test_a_temporary_refusal_after_data_is_retried_until_accepted(make_postman, db, smtp):
    clock, postman, published, task = notified(make_postman, smtp, "data_451", retry_base=10.0)
    r = row(db, task)
    assert (r.state, r.attempts) == ("pending", 1)  # not sent, not uncertain: the server said it did not take it
    assert "451 4.7.1 Message deferred" in r.last_error
    assert r.next_attempt_at == clock.now + timedelta(seconds=10)
    assert published == []
    smtp.set_mode("accept")
    clock.advance(10)
    assert postman.run_due() == 1
    assert len(smtp.wait_messages(task)) == 1
    r = row(db, task)
    assert (r.state, r.attempts, r.last_error) == ("sent", 2, None)
    assert [e for e, _ in published] == [contracts.MAIL_SENT]


def test_a_refused_sender_is_retried_or_failed_by_its_code(make_postman, db, smtp):
    postman, published = make_postman()
    smtp.set_mode("mail_451")
    later = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(later))
    smtp.set_mode("mail_553")
    never = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(never))
    assert (row(db, later).state, "451" in row(db, later).last_error) == ("pending", True)
    assert (row(db, never).state, "553" in row(db, never).last_error) == ("failed", True)
    assert [(e, p["task_id"]) for e, p in published] == [(contracts.MAIL_FAILED, never)]


def test_an_invalid_recipient_is_refused_without_talking_to_the_server(make_postman, db, smtp):
    postman, published = make_postman()
    task = new_task()
    since = len(smtp.log_lines())
    postman.notify(contracts.EXPORT_COMPLETED, completed(task, email="not an address"))
    r = row(db, task)
    assert (r.state, r.attempts) == ("failed", 0)
    assert "not a valid email address" in r.last_error
    assert smtp.log_lines()[since:] == []
    [(event_type, payload)] = published
    assert event_type == contracts.MAIL_FAILED and payload["recipient"] == "not an address"


def test_a_sender_that_vanished_before_data_is_replaced_after_its_lease(make_postman, db, smtp):
    # lease 15 s
    # recorded, one failed attempt
    clock, postman, published, task = notified(make_postman, smtp, "451", smtp_timeout=5.0)
    smtp.set_mode("accept")
    clock.advance(10)
    with db() as session:  # a sender claims the row... and dies before DATA
        dead = outbox.claim(session, row(db, task).id, now=clock(), lease=postman.settings.lease_seconds)
    assert dead is not None and row(db, task).state == "sending"
    clock.advance(10)
    assert postman.run_due() == 0  # lease still running
    clock.advance(10)
    assert postman.run_due() == 1
    assert len(smtp.wait_messages(task)) == 1
    r = row(db, task)
    assert (r.state, r.attempts) == ("sent", 3)
    with db() as session:  # the dead sender's claim is fenced off for good
        assert not outbox.begin_data(session, dead, now=clock(), lease=15)
        assert not outbox.mark_sent(session, dead, now=clock())


def test_a_sender_that_vanished_during_data_is_never_resent(make_postman, db, smtp):
    clock, postman, published, task = notified(make_postman, smtp, "451", smtp_timeout=5.0)
    clock.advance(10)
    with db() as session:  # claimed, DATA begun, then the process died: the server may have the mail
        dead = outbox.claim(session, row(db, task).id, now=clock(), lease=15)
        assert outbox.begin_data(session, dead, now=clock(), lease=15)
    smtp.set_mode("accept")
    since = len(smtp.log_lines())
    clock.advance(10)
    assert postman.run_due() == 0
    clock.advance(10)
    assert postman.run_due() == 1
    r = row(db, task)
    assert r.state == "uncertain" and "not sent again" in r.last_error
    assert smtp.log_lines()[since:] == []  # no SMTP traffic at all
    [(event_type, payload)] = published
    assert event_type == contracts.MAIL_FAILED and payload["reason"].startswith("delivery uncertain")
    clock.advance(3600)
    assert postman.run_due() == 0


def test_no_reply_after_data_means_uncertain_not_resent(make_postman, db, smtp):
    clock = Clock()
    postman, published = make_postman(clock, smtp_timeout=1.0)
    smtp.set_mode("stall_data")  # the server stores the mail, then its 250 never comes in time
    task = new_task()
    try:
        postman.notify(contracts.EXPORT_COMPLETED, completed(task))
    finally:
        smtp.set_mode("accept")
    r = row(db, task)
    assert r.state == "uncertain" and "during DATA" in r.last_error
    clock.advance(3600)
    assert postman.run_due() == 0
    assert len(smtp.messages(task)) == 1
    assert [e for e, _ in published] == [contracts.MAIL_FAILED]


def test_an_announcement_lost_in_a_crash_is_published_by_the_sweep(make_postman, db, smtp):
    clock = Clock()
    postman, _ = make_postman(clock)

    def broker_down(event_type, payload):
        raise ConnectionError("broker down")

    postman.publish = broker_down
    task = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(task))
    smtp.wait_messages(task)
    assert row(db, task).announced_at is None
    published: list = []
    postman.publish = lambda event_type, payload: published.append((event_type, payload))
    assert postman.announce_missed() == 0  # within the grace period the live sender may still publish
    clock.advance(31)
    assert postman.announce_missed() == 1
    assert [(e, p["task_id"]) for e, p in published] == [(contracts.MAIL_SENT, task)]
    assert row(db, task).announced_at is not None
    clock.advance(60)
    assert postman.announce_missed() == 0


def test_import_mails_go_out_too(make_postman, db, smtp):
    postman, _ = make_postman()
    task = new_task()
    payload = contracts.make_payload(contracts.IMPORT_FAILED, task_id=task, event_id=None, requested_by=WHO,
                                     code="invalid_record", message="bad date", file="sessions",
                                     record_id=3, field="start_time")
    postman.notify(contracts.IMPORT_FAILED, payload)
    [mail] = smtp.wait_messages(task)
    assert mail["Subject"] == "Import of event failed"
    assert "Where: File sessions, record 3, field start_time." in mail.get_body(("plain",)).get_content()


def test_backoff_doubles_and_is_capped():
    assert [outbox.backoff(n, 10) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert outbox.backoff(30, 10) == outbox.MAX_BACKOFF


# --- is mail being delivered? (the mailer's health report) ---------------------------------------------------------

def health(postman: Postman) -> dict:
    return delivery_health.report(postman.db, postman.transport, postman.settings)


def test_health_is_ok_while_mail_is_delivered(make_postman, smtp):
    postman, _ = make_postman()
    assert health(postman)["ok"] is True  # nothing sent yet, the server answers the probe
    task = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(task))
    report = health(postman)
    assert report["ok"] is True and report["reason"] is None and report["smtp"]["ok"] is True
    assert report["last_success"]["task_id"] == task and report["last_failure"] is None
    assert report["failed_attempts_since_last_success"] == 0


def test_health_is_degraded_when_the_server_refuses_every_message(make_postman, db, smtp):
    clock = Clock()
    postman, _ = make_postman(clock)  # MAIL_HEALTH_FAILURES: 2
    postman.notify(contracts.EXPORT_COMPLETED, completed(new_task()))  # one delivered mail first
    smtp.set_mode("data_554")
    refused = new_task()
    postman.notify(contracts.EXPORT_COMPLETED, completed(refused))
    report = health(postman)
    assert report["ok"] is True and report["failed_attempts_since_last_success"] == 1  # one refusal: not yet
    assert report["last_failure"]["task_id"] == refused and "554" in report["last_failure"]["reason"]
    smtp.set_mode("data_451")
    deferred = new_task()
    clock.advance(1)
    postman.notify(contracts.EXPORT_COMPLETED, completed(deferred))
    report = health(postman)
    assert report["ok"] is False and report["smtp"]["ok"] is True  # the server answers, it just delivers nothing
    assert report["failed_attempts_since_last_success"] == 2 and report["pending_retries"] == 1
    assert "2 delivery attempt(s) failed since the last delivered mail" in report["reason"]
    assert "451 4.7.1 Message deferred" in report["reason"]
    assert (report["last_failure"]["task_id"], report["last_failure"]["state"]) == (deferred, "pending")
    smtp.set_mode("accept")  # the retry goes through: healthy again
    clock.advance(10)
    postman.run_due()
    report = health(postman)
    assert report["ok"] is True and report["last_success"]["task_id"] == deferred
    assert report["failed_attempts_since_last_success"] == 0 and report["pending_retries"] == 0


def test_health_is_degraded_when_the_server_does_not_answer_a_probe(make_postman, smtp):
    postman, _ = make_postman()
    smtp.set_mode("noop_421")
    since = len(smtp.log_lines())
    report = health(postman)
    assert report["ok"] is False and report["smtp"]["error"] == "NOOP answered 421 4.3.2 Service shutting down"
    assert "does not answer a probe" in report["reason"]
    assert [line.split()[1] for line in smtp.log_lines()[since:]] == ["NOOP"]  # a probe sends no mail
    smtp.stop()
    try:
        report = health(postman)
    finally:
        smtp.start()
    assert report["ok"] is False and "refused the connection" in report["smtp"]["error"]


def test_addresses_refused_up_front_do_not_make_the_mail_path_look_broken(make_postman, smtp):
    postman, _ = make_postman()
    for _ in range(3):
        postman.notify(contracts.EXPORT_COMPLETED, completed(new_task(), email="not an address"))
    report = health(postman)
    assert report["ok"] is True and report["failed_attempts_since_last_success"] == 0

"""More than one instance of every service: 2 gateways, 3 exporters, 2 importers, 2 mailers and 2 storage instances
(behind a round-robin TCP proxy on ``STORAGE_URL``) on PostgreSQL and S3 (SeaweedFS, real SigV4), 60 mixed jobs
pushed through both gateways, one exporter and one importer killed with ``kill -9`` while they hold a job.

What must hold however the work was spread: every task ends exactly once (one terminal state, the row agrees with
its terminal events; an outcome is published again only by the run that took a killed one's lease over, and says
the same), an import makes one event, every task one mail, the bucket holds exactly the objects of live records
(every successful export's archive with its recorded size and sha256, nothing partial), and the retention sweeper,
run by both storage instances every second, deletes each expired import archive exactly once (one
``object_expired`` per key). Import archives expire ``ARCHIVE_KEEP_SECONDS`` after their import ended
(``IMPORT_ARCHIVE_KEEP_DAYS`` as a fraction of a day).

The figures (jobs, kills, redeliveries, outcomes published twice, duplicates, time) are printed as one line
starting ``replicas:`` (``-s``).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared import contracts
from shared.models import events as m
from shared.models.gateway import Task
from shared.models.importer import ImportedEvent
from shared.models.jobs import JobLease
from shared.models.storage import StorageObject
from tests.conftest import SAMPLES_DIR
from tests.support.e2e import TERMINAL, Client, Running, stack_for
from tests.support.event_tap import EventTap
from tests.support.hostile_archives import base_files, encode, hostile_cases, write_zip
from tests.support.import_helpers import archive_bytes
from tests.support.media_host import MediaHost, send_body
from tests.support.rabbit import amqp_uri
from tests.support.smtp_server import SmtpServer
from tests.support.storage_servers import ServerUnavailable, start_seaweedfs
from tests.support.waiting import wait_until

REPLICAS = {"api_gateway": 2, "exporter": 3, "importer": 2, "mailer": 2, "storage": 2}
BUCKET = "replicas"
S3_PREFIX = "replicas/"
ARCHIVE_KEEP_SECONDS = 45  # longer than an import waits in its queue here (the upload has this expiry already)
MEDIA_DELAY = 0.25  # seconds per medium: an export with media takes a few seconds, long enough to be killed in
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
SAMPLES = [SAMPLES_DIR / "open_event" / p for p in ("dasherized/OpenTechSummit2018", "dasherized/OSCAL2017",
                                                     "legacy/FOSSASIA10", "legacy/EhealthAfrica")]
EXPORT_FORMATS = ("json", "json", "json", "ical", "xcal", "csv")
JOBS = 60


class SlowMedia(MediaHost):
    """Photos and logos, each after a short pause."""

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        time.sleep(MEDIA_DELAY)
        send_body(request, JPEG, "image/jpeg")


@pytest.fixture
def seaweed(tmp_path) -> Iterator:
    try:
        server = start_seaweedfs(tmp_path / "seaweedfs", bucket=BUCKET)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


def s3_client(server):
    import boto3  # after eventlet.monkey_patch(): the root conftest patches first

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def bucket_listing(s3) -> dict[str, int]:
    """Every object under our prefix (staging debris included): key -> size."""
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=S3_PREFIX):
        found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return found


def held_task(run: Running, name: str, kind: str) -> str | None:
    """A task instance ``name`` holds the lease of and has reported ``started`` (or progress) for."""
    pid = run.pid(name)
    with run.env.db() as session:
        return session.scalar(
            sa.select(JobLease.task_id).join(Task, Task.id == JobLease.task_id)
            .where(JobLease.kind == kind, JobLease.state == "running", JobLease.owner.like(f"%:{pid}:%"),
                   Task.state == "WAITING", Task.status.in_((contracts.STARTED, "progress"))).limit(1))


def kill_while_holding(run: Running, name: str, kind: str, tries: int = 3,
                       feed: Callable[[], bool] | None = None) -> str:
    """``kill -9`` instance ``name`` while it holds a started job; the job's task id. A job can end between the
    query and the signal: the lease read after the kill (a dead process writes nothing) says whether the kill came
    mid-job; if not, the instance is started again and the next job it takes is the target. ``feed()`` submits one
    more job of ``kind`` ahead of its turn (False when none is left): called while the instance holds none, as when
    every job of the kind submitted so far has already ended."""
    for _ in range(tries):
        deadline = time.monotonic() + 90
        while True:
            try:
                task_id = wait_until(f"{name} holding a started {kind}", lambda: held_task(run, name, kind), 5,
                                     pause=0.05)
                break
            except TimeoutError:
                if time.monotonic() > deadline or feed is None or not feed():
                    raise
        run.kill(name)
        with run.env.db() as session:
            if session.scalar(sa.select(JobLease.state).where(JobLease.task_id == task_id)) == "running":
                return task_id
        run.restart(name)
    raise AssertionError(f"{name} finished its job before every one of {tries} kills landed")


def import_payloads(tmp: Path) -> list[tuple[str, bytes, str | None]]:
    """(file name, bytes, expected failure code or None) for every import: real samples, generated archives,
    hostile archives."""
    out: list[tuple[str, bytes, str | None]] = []
    for sample in SAMPLES:
        if sample.is_dir():
            data = archive_bytes(sample)
            out += [(f"{sample.name}.zip", data, None)] * 2
    for i in range(30 - len(out) - 5):
        files = base_files()
        files["event"]["name"] = f"Generated event {i}"
        files["event"]["identifier"] = f"replica-{i}-{uuid.uuid4().hex[:6]}"
        out.append((f"generated{i}.zip", write_zip(tmp / f"generated{i}.zip", encode(files)).read_bytes(), None))
    cases = [c for c in hostile_cases(tmp / "hostile") if c.limits is None and c.path.is_file()
             and 0 < c.path.stat().st_size < 2**20]
    for case in random.Random(3).sample(cases, 5):
        out.append((case.path.name, case.path.read_bytes(), case.expected_code))
    return out


def test_every_service_replicated_with_kills(tmp_path, postgres_url, seaweed):
    began = time.monotonic()
    media = SlowMedia()
    smtp = SmtpServer(tmp_path / "smtp")
    smtp.start()
    env = {
        "STORAGE_BACKEND": "s3", "S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": seaweed.endpoint, "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": seaweed.access_key, "S3_SECRET_ACCESS_KEY": seaweed.secret_key, "S3_PREFIX": S3_PREFIX,
        "STORAGE_SWEEP_INTERVAL": "1", "IMPORT_ARCHIVE_KEEP_DAYS": repr(ARCHIVE_KEEP_SECONDS / 86400),
        "MEDIA_ALLOW_HOSTS": f"127.0.0.1:{media.port}", "MEDIA_TIMEOUT": "5", "SMTP_PORT": str(smtp.port),
        "QUOTA_JOBS_IN_FLIGHT": "0", "MAX_WORKERS": "4", "RPC_TIMEOUT": "10",
    }
    try:
        with stack_for(tmp_path, {"alice": False, "bob": False}, database_url=postgres_url, replicas=REPLICAS,
                       **env) as run:
            check_replicated_run(run, tmp_path, seaweed, smtp, media, began)
    finally:
        smtp.stop()
        media.close()


def check_replicated_run(run: Running, tmp: Path, seaweed, smtp: SmtpServer, media: SlowMedia,
                         began: float) -> None:
    events = [run.event(owner, sessions=12, media_base_url=media.base_url) for owner in ("alice", "bob", "alice")]
    taps = {service: EventTap(amqp_uri(run.vhost), service)
            for service in (contracts.EXPORTER, contracts.IMPORTER, contracts.STORAGE)}
    run.start()
    started_up = time.monotonic() - began
    gateways = run.gateway_urls
    assert len(gateways) == 2 and len(set(gateways)) == 2
    # One login, both gateways: tokens are signed with the shared SECRET_KEY, so any instance accepts them.
    tokens = {who: run.client(who).http.headers["Authorization"].split()[1] for who in ("alice", "bob")}
    clients = {(who, url): Client(url, token) for who, token in tokens.items() for url in gateways}
    event_owner = dict(zip(events, ("alice", "bob", "alice"), strict=True))

    rng = random.Random(11)
    imports = import_payloads(tmp)
    jobs: list[tuple[str, tuple]] = [("export", (events[i % 3], EXPORT_FORMATS[i % len(EXPORT_FORMATS)]))
                                     for i in range(JOBS - len(imports))] + [("import", p) for p in imports]
    rng.shuffle(jobs)
    assert len(jobs) == JOBS
    submitted: dict[str, dict] = {}  # task id -> kind, expected failure code, user, gateway it went through

    def submit(index: int, job: tuple[str, tuple]) -> None:
        gateway = gateways[index % 2]
        if job[0] == "export":
            (event_id, fmt), expected = job[1], None
            who = event_owner[event_id]
            r = clients[who, gateway].post(f"/v1/events/{event_id}/export/{fmt}",
                                           json={"image": True} if fmt == "json" else {})
        else:
            (name, data, expected), who = job[1], ("alice", "bob")[index // 2 % 2]
            r = clients[who, gateway].post("/v1/events/import/json", files={"file": (name, data, "application/zip")})
        assert r.status_code == 202, r.text
        submitted[r.json()["task_url"].rsplit("/", 1)[1]] = {"kind": job[0], "expected": expected, "who": who,
                                                             "gateway": gateway}

    half = JOBS // 2
    for i, job in enumerate(jobs[:half]):
        submit(i, job)
    pids = {run.pid(name): name for name in run.stack.processes}
    early: set[int] = set()  # second-half jobs submitted ahead of their turn, to give an instance one to hold

    def feed(kind: str) -> Callable[[], bool]:
        def submit_next() -> bool:
            for i in range(half, JOBS):
                if jobs[i][0] == kind and i not in early:
                    early.add(i)
                    submit(i, jobs[i])
                    return True
            return False

        return submit_next

    # Imports end in well under a second: every import of the first half can end while exporter.1 is waited for.
    killed = {"exporter.1": kill_while_holding(run, "exporter.1", "export", feed=feed("export")),
              "importer.1": kill_while_holding(run, "importer.1", "import", feed=feed("import"))}
    run.restart(*killed)  # before the second half: the restarted instances take their share of it
    pids.update({run.pid(name): f"{name} (restarted)" for name in killed})
    for i, job in enumerate(jobs[half:], start=half):
        if i not in early:
            submit(i, job)

    def all_terminal() -> bool:
        with run.env.db() as session:
            rows = session.execute(sa.select(Task.id, Task.state).where(Task.id.in_(list(submitted)))).all()
        return len(rows) == JOBS and all(state in TERMINAL for _, state in rows)

    wait_until("every task terminal", all_terminal, 180, pause=0.5)
    views: dict[str, dict] = {}
    for task_id, job in submitted.items():  # through the gateway it was not submitted to: each answers for all
        other = gateways[1] if job["gateway"] == gateways[0] else gateways[0]
        view = clients[job["who"], other].get(f"/v1/tasks/{task_id}")
        assert view.status_code == 200, view.text
        views[task_id] = view.json()
    jobs_done = time.monotonic() - began

    # -- outcomes: exports and valid imports succeed, hostile archives fail with their code -------------------------
    for task_id, job in submitted.items():
        view = views[task_id]
        if job["expected"] is None:
            assert view["state"] == "SUCCESS", (job["kind"], view.get("result"))
        else:
            assert (view["state"], view["result"]["code"]) == ("FAILURE", job["expected"]), view

    # -- every task terminal exactly once: the row, and its terminal events ----------------------------------------
    # Outcomes are published at least once: a worker killed after publishing and before marking its lease done has
    # its successor (which finds the outcome saved under the lease, or the import committed) publish the same outcome
    # again; the gateway's state machine and
    # the mailer's dedupe key apply it once. So a task has one terminal outcome, and more than one terminal event
    # only if its lease changed hands, each saying the same.
    outcomes: dict[str, list[tuple[str, object]]] = {}
    started: Counter[str] = Counter()
    for service, done, failed, start in (
            (contracts.EXPORTER, contracts.EXPORT_COMPLETED, contracts.EXPORT_FAILED, contracts.EXPORT_STARTED),
            (contracts.IMPORTER, contracts.IMPORT_COMPLETED, contracts.IMPORT_FAILED, contracts.IMPORT_STARTED)):
        for event_type, payload in taps[service].drain():
            task_id = payload.get("task_id")
            if task_id not in submitted:
                continue
            if event_type in (done, failed):
                # An export's outcome published again is the saved event itself, byte for byte (size, sha256,
                # warnings: a rerun's archive would differ); an import's names the event its run committed.
                what = json.dumps(payload, sort_keys=True) if service == contracts.EXPORTER \
                    else payload.get("code") if event_type == failed else payload.get("id")
                outcomes.setdefault(task_id, []).append(("SUCCESS" if event_type == done else "FAILURE", what))
            elif event_type == start:
                started[task_id] += 1
    with run.env.db() as session:
        deliveries = dict(session.execute(sa.select(JobLease.task_id, JobLease.deliveries)
                                          .where(JobLease.task_id.in_(list(submitted)))).all())
    assert set(outcomes) == set(submitted), set(submitted) - set(outcomes)
    assert all(len(set(said)) == 1 for said in outcomes.values()), {t: o for t, o in outcomes.items() if len(o) > 1}
    assert {t: said[0][0] for t, said in outcomes.items()} == {t: views[t]["state"] for t in submitted}
    republished = {t: len(said) for t, said in outcomes.items() if len(said) > 1}
    assert all(deliveries[t] > 1 for t in republished), (republished, deliveries)
    log = run.log_text()
    for task_id in killed.values():
        # Taken over; the successor works again, unless the killed run got as far as its outcome (saved under the
        # lease, or the import committed): then it reports that, without starting.
        assert deliveries[task_id] >= 2, (task_id, deliveries[task_id])
        reported_earlier = (f"{task_id}: an earlier run reached its outcome" in log
                            or f"{task_id}: an earlier run committed it" in log)
        assert started[task_id] >= 2 or reported_earlier, f"killed task {task_id} started {started[task_id]} time(s)"
    redelivered = sorted(t for t, n in started.items() if n > 1)
    taken_over = sorted(t for t, n in deliveries.items() if n > 1)

    with run.env.db() as session:
        # -- one event per import -----------------------------------------------------------------------------------
        imported = Counter(session.scalars(sa.select(ImportedEvent.task_id)
                                           .where(ImportedEvent.task_id.in_(list(submitted)))).all())
        succeeded_imports = {t for t, j in submitted.items()
                             if j["kind"] == "import" and views[t]["state"] == "SUCCESS"}
        assert set(imported) == succeeded_imports and set(imported.values()) <= {1}
        event_count = session.scalar(sa.select(sa.func.count()).select_from(m.Event))
        assert event_count == len(events) + len(succeeded_imports)
        assert {views[t]["result"]["id"] for t in succeeded_imports} == set(
            session.scalars(sa.select(ImportedEvent.event_id)).all())

    # -- one mail per task --------------------------------------------------------------------------------------------
    def mails() -> Counter[str]:
        counts: Counter[str] = Counter()
        for message in smtp.messages():
            msg_id = message["Message-ID"] or ""
            counts.update(t for t in submitted if t in msg_id)
        return counts

    wait_until("a mail for every task", lambda: set(mails()) == set(submitted), 90, pause=0.5)
    mail_counts = mails()
    extra_mails = {t: n for t, n in mail_counts.items() if n != 1}
    assert not extra_mails, extra_mails

    # -- retention: every import archive expires, deleted exactly once by two sweepers ------------------------------
    with run.env.db() as session:
        archive_keys = {t: session.get(Task, t).params["key"] for t, j in submitted.items() if j["kind"] == "import"}

    def archives_gone() -> bool:
        with run.env.db() as session:
            rows = session.scalars(sa.select(StorageObject).where(StorageObject.key.in_(list(archive_keys.values()))))
            rows = list(rows)
            return len(rows) == len(archive_keys) and all(r.deleted_at is not None and r.announce is None for r in rows)

    wait_until("every import archive expired and announced", archives_gone, ARCHIVE_KEEP_SECONDS + 60, pause=0.5)
    expired = Counter(p["key"] for t, p in taps[contracts.STORAGE].drain() if t == contracts.OBJECT_EXPIRED)
    assert {k: expired[k] for k in archive_keys.values()} == dict.fromkeys(archive_keys.values(), 1)
    assert all(n == 1 for n in expired.values()), expired

    # -- the bucket vs the object index vs the tasks: nothing orphaned, nothing partial -------------------------------
    s3 = s3_client(seaweed)
    listing = bucket_listing(s3)
    with run.env.db() as session:
        live = {row.key: row for row in session.scalars(sa.select(StorageObject).where(
            StorageObject.deleted_at.is_(None)))}
    in_bucket = {key[len(S3_PREFIX):]: size for key, size in listing.items()}
    assert set(in_bucket) == set(live), {"orphaned": set(in_bucket) - set(live), "missing": set(live) - set(in_bucket)}
    assert not s3.list_multipart_uploads(Bucket=BUCKET, Prefix=S3_PREFIX).get("Uploads")
    exports_ok = {t: views[t]["result"] for t, j in submitted.items() if j["kind"] == "export"}
    owners = {r["key"]: t for t, r in exports_ok.items()}
    for key, row in live.items():
        assert in_bucket[key] == row.size, key
        if key.startswith("exports/"):
            assert key in owners, f"{key}: no successful export stored it"
        else:
            task_id = key.split("/")[1]
            assert key.startswith("imports/") and task_id in succeeded_imports, f"{key}: belongs to no live record"
    for task_id, result in exports_ok.items():
        body = s3.get_object(Bucket=BUCKET, Key=S3_PREFIX + result["key"])["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (result["size"], result["sha256"]), task_id

    # -- both instances of each HTTP service served ------------------------------------------------------------------
    spread = run.storage_proxy.connections()
    assert all(spread.values()), spread
    # Which sweeper did the work is a race (one may claim every batch); what is guaranteed, and checked above, is that
    # two sweepers ran and each expired object was deleted and announced once. The split is only reported.
    sweeps = {name: (run.env.var_dir / "log" / f"{name}.log").read_text(errors="replace").count("retention: Sweep")
              for name in run.stack.instances("storage")}
    assert sum(sweeps.values()) > 0, f"no storage instance logged a sweep: {sweeps}"
    with run.env.db() as session:  # who finished each job: the lease's last owner (host:pid:...)
        finished_by = Counter(pids.get(int(owner.split(":")[1]), "?") for owner in session.scalars(
            sa.select(JobLease.owner).where(JobLease.task_id.in_(list(submitted)))))
    print(f"\nreplicas: jobs={JOBS} (exports={len(exports_ok)}, imports={len(archive_keys)}, "
          f"failed as expected={sum(1 for j in submitted.values() if j['expected'])}) kills={len(killed)} "
          f"redeliveries={len(redelivered)} (leases taken over={len(taken_over)}) "
          f"outcomes published twice={len(republished)} duplicate outcomes=0 duplicate mails={len(extra_mails)} "
          f"archives expired={len(archive_keys)} (object_expired per key: 1) storage connections={spread} "
          f"sweeps that did work={sweeps} jobs finished by={dict(sorted(finished_by.items()))} "
          f"start-up={started_up:.0f}s jobs done={jobs_done:.0f}s "
          f"total={time.monotonic() - began:.0f}s")


"""Helpers of the import tests: zipping samples, submitting uploads, counting rows, undoing id renumbering."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from shared.archive import ARRAY_FILES, dump_object, iter_array_text
from shared.archive.variants import DATA_FILES
from shared.contracts import IMPORT_REQUESTED, make_payload
from shared.models.base import Base
from shared.models.gateway import Task
from tests.support.e2e import TERMINAL, Client, Env

IMPORT_PATH = "/v1/events/import/json"
EXPORTED = ("event",) + ARRAY_FILES
# Keys whose values hold ids of another file, per file (as tests/test_archive_loader.py undoes them).
REFERENCES = {
    "event": {"social_links": "social_links"},
    "sessions": {"track": "tracks", "session_type": "session_types", "microlocation": "microlocations",
                 "speakers": "speakers"},
    "speakers": {"sessions": "sessions"},
    "tracks": {"sessions": "sessions"},
}
# File names an archive may use for each counted collection (legacy, 2016 ``.json``, custom_forms).
_NAMES = {file: DATA_FILES[file] for file in ARRAY_FILES}


def zip_folder(folder: Path) -> bytes:
    """The folder as a zip with no top-level folder (what an export looks like)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def zip_members(members: dict[str, bytes]) -> bytes:
    """A zip holding the given members (name -> bytes), deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def archive_bytes(sample: Path) -> bytes:
    return sample.read_bytes() if sample.is_file() else zip_folder(sample)


def sample_files(sample: Path) -> dict[str, Any]:
    """Parsed JSON files of a sample folder or zip, by member name (media and broken JSON skipped)."""
    files: dict[str, Any] = {}
    if sample.is_file():
        with zipfile.ZipFile(sample) as archive:
            items = [(i.filename, archive.read(i)) for i in archive.infolist() if not i.is_dir()]
    else:
        items = [(p.relative_to(sample).as_posix(), p.read_bytes()) for p in sample.rglob("*") if p.is_file()]
    for name, raw in items:
        if "/" in name:
            continue
        try:
            files[name] = json.loads(raw)
        except ValueError:
            continue
    return files


def _id(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)  # hand-made variants wrote ids as strings
    return value


def _relation_ids(session: dict, key: str) -> set:
    ids = set()
    for name in (key, key.replace("_", "-")):
        ref = session.get(name)
        if isinstance(ref, dict) and ref.get("id") is not None:
            ids.add(_id(ref["id"]))
        flat = session.get(f"{name}_id", session.get(f"{name}-id"))
        if flat is not None:
            ids.add(_id(flat))
    return ids


def expected_counts(sample: Path) -> dict[str, int]:
    """Records per collection that the sample's files hold, read independently of the importer.

    Exact copies of a record count once. Sessions carry snapshots of their track, session type and room
    (``{"id", "name"}``): a target that its file lacks (or a file that is absent) is held there, and counts.
    """
    files = sample_files(sample)
    records: dict[str, list] = {}
    for collection, names in _NAMES.items():
        value = next((files[n] for n in names if n in files), [])
        items = value if isinstance(value, list) else []
        seen, distinct = set(), []
        for item in items:
            text = json.dumps(item, sort_keys=True)
            if text not in seen:
                seen.add(text)
                distinct.append(item)
        records[collection] = distinct
    counts = {collection: len(items) for collection, items in records.items()}
    for collection, key in (("tracks", "track"), ("session_types", "session_type"),
                            ("microlocations", "microlocation")):
        present = {_id(r.get("id")) for r in records[collection] if isinstance(r, dict)}
        held = set().union(*(_relation_ids(s, key) for s in records["sessions"] if isinstance(s, dict)))
        counts[collection] += len(held - present)
    event = next((files[n] for n in ("event", "event.json") if n in files), {})
    links = event.get("social_links", event.get("social-links"))
    if links is None:
        links = files.get("social_links.json", files.get("social_links", []))
    counts["social_links"] = len([x for x in links if isinstance(x, dict)]) if isinstance(links, list) else 0
    return counts


def submit(client: Client, data: bytes, filename: str = "event.zip") -> requests.Response:
    return client.post(IMPORT_PATH, files={"file": (filename, data, "application/zip")}, timeout=60)


def submit_ok(client: Client, data: bytes, filename: str = "event.zip") -> str:
    r = submit(client, data, filename)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == r.json()["task_url"]
    return r.json()["task_url"]


def wait_all(client: Client, task_urls: list[str], timeout: float = 180) -> dict[str, dict]:
    """Poll many tasks until every one is terminal (one deadline for all)."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while len(done) < len(task_urls):
        for url in task_urls:
            if url in done:
                continue
            task = client.get(url).json()
            if task["state"] in TERMINAL:
                done[url] = task
        if len(done) < len(task_urls):
            assert time.monotonic() < deadline, f"{len(task_urls) - len(done)} tasks not finished in {timeout} s"
            time.sleep(0.1)
    return done


def import_all(client: Client, root: Path, names: list[str]) -> dict[str, dict]:
    """Every sample ``root/<name>`` submitted at once, then polled together: name -> terminal task."""
    urls = {name: submit_ok(client, archive_bytes(root / name), Path(name).stem + ".zip") for name in names}
    tasks = wait_all(client, list(urls.values()))
    return {name: tasks[url] for name, url in urls.items()}


def row_counts(database_url: str, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """Rows of every table of the platform database."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                    for t in Base.metadata.sorted_tables if t.name not in exclude}
    finally:
        engine.dispose()


def export_archive(client: Client, event_id: int) -> dict[str, bytes]:
    """Export an event through the API (no media) and return its members."""
    r = client.post(f"/v1/events/{event_id}/export/json", json={})
    assert r.status_code == 202, r.text
    task = client.wait_task(r.json()["task_url"], timeout=120)
    assert task["state"] == "SUCCESS", task
    body = requests.get(task["result"]["download_url"], timeout=60).content
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def position_id_map(source: dict[str, Any], produced: dict[str, Any]) -> dict[str, dict[int, int]]:
    """file -> {source id: produced id}, pairing records by position (exports keep the source's file order)."""
    id_map: dict[str, dict[int, int]] = {"event": {}}
    if isinstance(source["event"].get("id"), int):
        id_map["event"][source["event"]["id"]] = produced["event"]["id"]
    pairs = [("social_links", source["event"].get("social_links") or [], produced["event"].get("social_links") or [])]
    pairs += [(f, source.get(f, []), produced.get(f, [])) for f in ARRAY_FILES]
    for file, old, new in pairs:
        assert len(old) == len(new), file
        mapping: dict[int, int] = {}
        for a, b in zip(old, new, strict=True):
            if isinstance(a, dict) and isinstance(a.get("id"), int) and not isinstance(a["id"], bool):
                mapping.setdefault(a["id"], b["id"])
        id_map[file] = mapping
    return id_map


def unmap(file: str, record: dict, id_map: dict[str, dict[int, int]]) -> dict:
    """``record`` with produced ids turned back into source ids (own id and every reference)."""
    inverse = {name: {new: old for old, new in m.items()} for name, m in id_map.items()}

    def back(target: str, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("id"), int):
            return dict(value, id=inverse[target].get(value["id"], value["id"]))
        if isinstance(value, list):
            return [back(target, v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            return inverse[target].get(value, value)
        return value

    out = dict(record)
    if "id" in out:
        out["id"] = back(file, out["id"])
    for key, target in REFERENCES.get(file, {}).items():
        if key in out:
            out[key] = back(target, out[key])
    return out


def file_text(file: str, value: Any) -> str:
    """A file's text as the exporter writes it."""
    if file == "event":
        return dump_object(value)
    return "".join(iter_array_text(value))


def parsed_members(members: dict[str, bytes]) -> dict[str, Any]:
    return {name: json.loads(members[name]) for name in EXPORTED if name in members}


def put_archive(amqp_uri: str, key: str, data: bytes) -> None:
    """Store bytes under ``key`` the way the gateway does (signed PUT from the storage service)."""
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=10) as cluster:
        url = cluster.storage.signed_url(key, method="PUT", ttl=600)
    r = requests.put(url, data=data, timeout=30)
    assert r.status_code == 201, r.text


def staged_import(env: Env, folder: Path, user: dict[str, Any]) -> dict[str, Any]:
    """What the gateway does before an import runs: ``folder`` zipped into storage and its task row for ``user``
    (``{"id", "email"}``); the import-requested payload to publish (as often as a test wants)."""
    task_id = str(uuid.uuid4())
    filename = f"{folder.name}.zip"
    key = f"imports/{task_id}/{filename}"
    data = archive_bytes(folder)
    put_archive(env.env["AMQP_URI"], key, data)
    with env.db() as session:
        session.add(Task(id=task_id, kind="import", event_id=None, requested_by=user["id"],
                         requester_email=user["email"], params={"filename": filename, "key": key}))
        session.commit()
    return make_payload(IMPORT_REQUESTED, task_id=task_id, event_id=None, requested_by=user, key=key,
                        filename=filename, size=len(data))


def wait_queue_drained(vhost: str, queue: str, timeout: float = 60) -> None:
    """Until a queue holds no message, delivered or not."""
    from tests.support.rabbit import queue_info

    deadline = time.monotonic() + timeout
    while True:
        info = queue_info(vhost, queue) or {}
        if info.get("messages", 1) == 0 and info.get("messages_unacknowledged", 1) == 0:
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.2)

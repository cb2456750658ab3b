"""One function per command: ask the API, then print the answer (``Output``) and report progress (``Reporter``)."""

from __future__ import annotations

import getpass
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from eventport.api import Api, error_from, not_the_api, unreachable
from eventport.config import Credentials
from eventport.errors import FAILED, UNAVAILABLE, USAGE, CliError, Interrupted
from eventport.output import Output
from eventport.progress import Reporter, human_bytes, step_text
from eventport.transfer import MultipartFile, download, part_path

TERMINAL = ("SUCCESS", "FAILURE")
MEDIA = ("image", "audio", "video", "document")
POLL_FIRST, POLL_MAX = 0.2, 1.0  # seconds between task polls: quick at first, then once a second
# What a file's extension says it holds, for `import` without --format (the server reads the content anyway).
IMPORT_EXTENSIONS = {".zip": "json", ".xml": "frab-xml", ".json": "schedule-json", ".ics": "ical",
                     ".xcs": "xcal", ".xcal": "xcal", ".csv": "csv"}


@dataclass
class Context:
    args: Any
    api: Api
    credentials: Credentials
    out: Output
    report: Reporter


def task_id_of(text: str) -> str:
    """A task id from what a user may paste: the id, ``/v1/tasks/<id>`` or the whole task URL."""
    path = urlsplit(text).path if "://" in text else text
    return path.rstrip("/").rsplit("/", 1)[-1]


# --- login ---------------------------------------------------------------------------------------------------------

def login(ctx: Context) -> int:
    email = ctx.args.email
    if not email:
        if not sys.stdin.isatty():
            raise CliError("give the email: eventport login EMAIL", USAGE, "usage")
        email = input("Email: ").strip()
    if ctx.args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {email}: ")
    else:
        raise CliError("no terminal to ask the password on: pipe it with --password-stdin", USAGE, "usage")
    if not password:
        raise CliError("the password is empty", USAGE, "usage")
    try:
        body = ctx.api.json("POST", "/v1/auth/login", auth=False, json={"email": email, "password": password})
    except CliError as exc:
        if exc.status == 401:  # wrong credentials: the request failed, this is not a missing login
            raise CliError(exc.message.replace(" Log in again: eventport login", ""), FAILED, exc.code,
                           exc.status) from None
        raise
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise not_the_api("/v1/auth/login")
    ctx.credentials.save(ctx.api.base_url, token, email)
    if ctx.out.as_json:
        ctx.out.document({"url": ctx.api.base_url, "email": email, "credentials": str(ctx.credentials.path)})
    else:
        ctx.out.line(f"Logged in to {ctx.api.base_url} as {email} (token kept in {ctx.credentials.path}).")
    return 0


def logout(ctx: Context) -> int:
    removed = ctx.credentials.remove(ctx.api.base_url)
    if ctx.out.as_json:
        ctx.out.document({"url": ctx.api.base_url, "logged_out": removed})
    else:
        ctx.out.line(f"Logged out of {ctx.api.base_url}." if removed else f"Not logged in to {ctx.api.base_url}.")
    return 0


def older_server(ctx: Context, path: str, exc: CliError) -> CliError:
    """A bare 404 (no error code of ours) for a route that older servers lack says so plainly."""
    if exc.status == 404 and exc.code == "not_found":
        return CliError(f"the server at {ctx.api.base_url} has no GET {path} (an older version?)", FAILED,
                        "not_supported", 404)
    return exc


def whoami(ctx: Context) -> int:
    try:
        me = ctx.api.get("/v1/me")
    except CliError as exc:
        raise older_server(ctx, "/v1/me", exc) from None
    if ctx.out.as_json:
        ctx.out.document(me)
    else:
        ctx.out.line(f"{me.get('email')} (user {me.get('id')}{', admin' if me.get('is_admin') else ''}) "
                     f"at {ctx.api.base_url}")
    return 0


# --- lists -----------------------------------------------------------------------------------------------------

def events(ctx: Context) -> int:
    rows = list(ctx.api.pages("/v1/events", {"limit": ctx.args.page_size}))
    if ctx.out.as_json:
        ctx.out.document({"data": rows})
    else:
        ctx.out.table(rows, [("ID", "id"), ("IDENTIFIER", "identifier"), ("NAME", "name"), ("START", "start_time"),
                             ("END", "end_time"), ("TIMEZONE", "timezone")], "No events.")
    return 0


def tasks(ctx: Context) -> int:
    params = {"kind": ctx.args.kind, "state": ctx.args.state, "event_id": ctx.args.event, "limit": ctx.args.page_size}
    try:
        rows = list(ctx.api.pages("/v1/tasks", params))
    except CliError as exc:
        raise older_server(ctx, "/v1/tasks", exc) from None
    if ctx.out.as_json:
        ctx.out.document({"data": rows})
    else:
        ctx.out.table(rows, [("ID", "id"), ("KIND", "kind"), ("EVENT", "event_id"), ("STATE", "state"),
                             ("STATUS", "status"), ("CREATED", "created_at")], "No tasks.")
    return 0


def exports(ctx: Context) -> int:
    rows = list(ctx.api.pages(f"/v1/events/{ctx.args.event}/exports", {"limit": ctx.args.page_size}))
    if ctx.out.as_json:
        ctx.out.document({"data": rows})
    else:
        shown = [{**row, "size": human_bytes(row["size"]) if row.get("size") is not None else None,
                  "gone": row.get("deleted_at") or row.get("expired_at")} for row in rows]
        ctx.out.table(shown, [("TASK", "task_id"), ("FORMAT", "format"), ("STATE", "state"), ("SIZE", "size"),
                              ("CREATED", "created_at"), ("BY", "requested_by"), ("GONE", "gone")],
                      f"Event {ctx.args.event} has no exports.")
    return 0


def backends(ctx: Context) -> int:
    rows = list(ctx.api.pages("/v1/storage-backends"))
    if ctx.out.as_json:
        ctx.out.document({"data": rows})
    else:
        ctx.out.table(rows, [("ID", "storage_backend_id"), ("KIND", "storage_backend"), ("DEFAULT", "default"),
                             ("KEEP DAYS", "keep_days"), ("DESCRIPTION", "description")], "No storage backends.")
    return 0


def formats(ctx: Context) -> int:
    rows = list(ctx.api.pages("/v1/formats", auth=False))
    if ctx.out.as_json:
        ctx.out.document({"data": rows})
    else:
        ctx.out.table(rows, [("FORMAT", "identifier"), ("EXTENSION", "extension"), ("CONTENT TYPE", "content_type"),
                             ("DESCRIPTION", "description")], "No formats.")
    return 0


# --- tasks -----------------------------------------------------------------------------------------------------

def get_task(api: Api, task_id: str) -> dict[str, Any]:
    return api.get(f"/v1/tasks/{task_id}")


def wait_for(ctx: Context, task_id: str) -> dict[str, Any]:
    """Poll the task until it ends, showing its progress; Ctrl-C leaves it running on the server."""
    delay = POLL_FIRST
    ctx.report.note(f"Waiting for task {task_id} (Ctrl-C stops waiting, not the task).")
    try:
        with ctx.report.task() as bar:
            while True:
                task = get_task(ctx.api, task_id)
                bar.show(task)
                if task.get("state") in TERMINAL:
                    return task
                time.sleep(delay)
                delay = min(delay * 1.5, POLL_MAX)
    except KeyboardInterrupt:
        raise Interrupted(f"the task goes on on the server: eventport task {task_id}") from None


def failure(task: dict[str, Any]) -> CliError:
    """A FAILURE task as the error to report: its code and message, and each problem of a failed import."""
    result = task.get("result") or {}
    where = [str(result[k]) for k in ("file", "record_id", "field") if result.get(k) not in (None, "")]
    message = f"{task.get('kind', 'task')} {task.get('id')} failed: {result.get('message') or 'no reason given'}"
    if where:
        message += f" [{' '.join(where)}]"
    details = []
    for problem in (result.get("errors") or [])[:20]:
        if isinstance(problem, dict):
            spot = " ".join(str(problem[k]) for k in ("file", "record_id", "field") if problem.get(k) not in (None, ""))
            details.append(f"  {problem.get('code')}: {problem.get('message')}" + (f" [{spot}]" if spot else ""))
    total = result.get("errors_total")
    if isinstance(total, int) and total > len(details):
        details.append(f"  ... {total - len(details)} more problem(s): eventport task {task.get('id')} --json")
    return CliError(message, FAILED, result.get("code") or "task_failed", document=task, details=details)


def show_task(ctx: Context, task: dict[str, Any]) -> None:
    result = task.get("result") or {}
    pairs: list[tuple[str, Any]] = [
        ("task", task.get("id")), ("kind", task.get("kind")), ("event", task.get("event_id")),
        ("state", task.get("state")), ("status", task.get("status")),
        ("progress", step_text(task) if task.get("progress") else None),
        ("created", task.get("created_at")), ("updated", task.get("updated_at")),
    ]
    if task.get("state") == "SUCCESS" and task.get("kind") == "export":
        pairs += [("size", f"{human_bytes(result.get('size'))} ({result.get('size')} bytes)"),
                  ("sha256", result.get("sha256")), ("download", result.get("download_url")),
                  ("expires", result.get("expires_at")), ("deleted", result.get("deleted_at")),
                  ("expired", result.get("expired_at")), ("warnings", result.get("warnings_total") or None)]
    elif task.get("state") == "SUCCESS":
        counts = result.get("counts")
        pairs += [("new event", result.get("id")), ("name", result.get("event_name")),
                  ("counts", ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else None),
                  ("warnings", result.get("warnings_total") or None)]
    elif task.get("state") == "FAILURE":
        pairs += [("code", result.get("code")), ("message", result.get("message")),
                  ("problems", result.get("errors_total"))]
    ctx.out.fields(pairs)


def task(ctx: Context) -> int:
    found = get_task(ctx.api, task_id_of(ctx.args.task))
    if ctx.out.as_json:
        ctx.out.document(found)
    else:
        show_task(ctx, found)
    return 0


def finish(ctx: Context, found: dict[str, Any], extra: dict[str, Any] | None = None) -> int:
    """Print a finished task (and what was downloaded); a FAILURE is exit 1."""
    if found.get("state") == "FAILURE":
        raise failure({**found, **(extra or {})})
    if ctx.out.as_json:
        ctx.out.document({**found, **(extra or {})})
    else:
        show_task(ctx, found)
        if extra and "downloaded" in extra:
            saved = extra["downloaded"]
            ctx.out.line(f"Saved {saved['file']} ({human_bytes(saved['size'])}, sha256 {saved['sha256']}).")
    return 0


# --- export and download ---------------------------------------------------------------------------------------

def export(ctx: Context) -> int:
    args = ctx.args
    body: dict[str, Any] = {name: True for name in args.media}
    if args.storage:
        body["storage"] = args.storage
    answer = ctx.api.json("POST", f"/v1/events/{args.event}/export/{args.format}", json=body, ok=(202,))
    task_id = task_id_of(answer["task_url"])
    if not (args.wait or args.out):
        if ctx.out.as_json:
            ctx.out.document({"task_id": task_id, **answer})
        else:
            ctx.out.line(task_id)
            ctx.report.note(f"Export queued; follow it with: eventport task {task_id}")
        return 0
    found = wait_for(ctx, task_id)
    if found.get("state") != "SUCCESS" or not args.out:
        return finish(ctx, found)
    saved = fetch(ctx, found, Path(args.out))
    return finish(ctx, found, {"downloaded": saved})


def download_name(found: dict[str, Any]) -> str:
    """The file name the server gives the archive: the signed link's ``filename``, else the key's last part."""
    result = found.get("result") or {}
    link = result.get("download_url") or ""
    names = parse_qs(urlsplit(link).query).get("filename") or []
    name = names[0] if names else str(result.get("key") or "").rsplit("/", 1)[-1]
    name = Path(name).name  # never a path: only a name in the current folder
    return name or f"event{found.get('event_id')}.zip"


def _expired(when: Any) -> bool:
    try:
        moment = datetime.strptime(str(when), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return False
    return moment <= datetime.now(UTC)


def fetch(ctx: Context, found: dict[str, Any], dest: Path | None) -> dict[str, Any]:
    """Download a finished export's archive to ``dest`` (default: its own name), resuming a ``.part``."""
    if found.get("kind") != "export":
        raise CliError(f"task {found.get('id')} is an {found.get('kind')}: only exports have a download",
                       FAILED, "not_an_export")
    if found.get("state") != "SUCCESS":
        raise CliError(f"task {found.get('id')} is {found.get('state')}, not SUCCESS: nothing to download "
                       f"(eventport download {found.get('id')} --wait waits for it)", FAILED, "not_finished")
    result = found.get("result") or {}
    for gone in ("deleted_at", "expired_at"):
        if result.get(gone):
            raise CliError(f"the archive of task {found['id']} is gone ({gone.split('_')[0]} {result[gone]})",
                           FAILED, "export_gone", 410)
    dest = dest or Path(download_name(found))
    link = result.get("download_url")
    if link and not _expired(result.get("expires_at")):
        url, auth = link, False  # a signed link: no credentials go with it
    else:  # the link expired: the event's exports path redirects to a fresh one
        url, auth = ctx.api.url(f"/v1/events/{found['event_id']}/exports/{found['id']}"), True

    def get(headers: dict[str, str]) -> requests.Response:
        if auth:
            if not ctx.api.token:
                raise CliError("the download link expired and a fresh one needs a login: eventport login",
                               UNAVAILABLE, "not_logged_in")
            headers = {**headers, "Authorization": f"Bearer {ctx.api.token}"}
        try:
            response = ctx.api.http.get(url, headers=headers, stream=True, timeout=(10, 60))
        except requests.RequestException as exc:
            raise unreachable(urlsplit(url)._replace(path="", query="").geturl(), exc) from None
        if response.status_code not in (200, 206, 416):
            with response:
                raise error_from(response)
        return response

    def bar(total: int | None, initial: int) -> Any:
        return ctx.report.transfer(dest.name, total, initial)

    if part_path(dest).exists():
        ctx.report.note(f"Resuming {part_path(dest)} ({human_bytes(part_path(dest).stat().st_size)} there).")
    try:
        return download(get, dest, sha256=result.get("sha256"), bar=bar, rate=ctx.args.limit_rate)
    except KeyboardInterrupt:
        raise Interrupted(f"{part_path(dest)} kept: run the same command again to resume") from None
    except requests.RequestException:
        raise CliError(f"the connection broke during the download; {part_path(dest)} kept: run the same command "
                       "again to resume", UNAVAILABLE, "connection_broken") from None


def download_command(ctx: Context) -> int:
    task_id = task_id_of(ctx.args.task)
    found = wait_for(ctx, task_id) if ctx.args.wait else get_task(ctx.api, task_id)
    if found.get("state") == "FAILURE":
        raise failure(found)
    saved = fetch(ctx, found, Path(ctx.args.out) if ctx.args.out else None)
    if ctx.out.as_json:
        ctx.out.document(saved)
    else:
        ctx.out.line(f"Saved {saved['file']} ({human_bytes(saved['size'])}, sha256 {saved['sha256']}"
                     + (f", resumed at byte {saved['resumed_from']}" if saved["resumed_from"] else "") + ").")
    return 0


# --- import ----------------------------------------------------------------------------------------------------

def import_format(path: Path, given: str | None) -> str:
    if given:
        return given
    if path.is_dir():
        return "json"
    found = IMPORT_EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise CliError(f"cannot tell the format of {path.name} from its extension: give --format "
                       "(eventport formats lists them)", USAGE, "usage")
    return found


def zip_folder(folder: Path, into: Path) -> Path:
    """An Open Event archive of a folder: its files at the zip's root, as the server's exports lay them out."""
    target = into / f"{folder.resolve().name or 'archive'}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return target


def import_command(ctx: Context) -> int:
    path = Path(ctx.args.file)
    if not path.exists():
        raise CliError(f"{path} does not exist", USAGE, "usage")
    fmt = import_format(path, ctx.args.format)
    with tempfile.TemporaryDirectory(prefix="eventport-") as scratch:
        if path.is_dir():
            ctx.report.note(f"Zipping the folder {path} ...")
            path = zip_folder(path, Path(scratch))
        answer = upload(ctx, path, fmt)
    task_id = task_id_of(answer["task_url"])
    if not ctx.args.wait:
        if ctx.out.as_json:
            ctx.out.document({"task_id": task_id, **answer})
        else:
            ctx.out.line(task_id)
            ctx.report.note(f"Import queued; follow it with: eventport task {task_id}")
        return 0
    return finish(ctx, wait_for(ctx, task_id))


def upload(ctx: Context, path: Path, fmt: str) -> dict[str, Any]:
    """POST the file as multipart, streamed from disk with a byte bar. Uploads do not resume: Ctrl-C loses it."""
    size = path.stat().st_size
    with ctx.report.transfer(f"upload {path.name}", size) as bar:
        body = MultipartFile(path, on_chunk=bar.advance)
        try:
            return ctx.api.json("POST", f"/v1/events/import/{fmt}", data=body, ok=(202,),
                                params={"strict": "true"} if ctx.args.strict else None,
                                headers={"Content-Type": body.content_type}, timeout=(10, 300))
        except KeyboardInterrupt:
            raise Interrupted("upload stopped (uploads start again from zero)") from None

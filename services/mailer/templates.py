"""The notification mails: subject, plain text and HTML from one event payload (pure functions, no I/O).

Both parts are rendered from the same list of blocks so they never say different things. Everything that comes from
a payload or the database is escaped in the HTML part; subjects are flattened to one line (no header injection).
Subjects follow the Open Event Server's (../shared/samples/FORMAT.md, "Mail subjects").
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from shared import contracts
from shared.contracts import UTC_FORMAT

KINDS = (contracts.EXPORT_COMPLETED, contracts.EXPORT_FAILED, contracts.IMPORT_COMPLETED, contracts.IMPORT_FAILED)
MAX_WARNINGS_LISTED = 20
MAX_DETAIL_CHARS = 500
COUNT_ORDER = ("event", "sessions", "speakers", "tracks", "microlocations", "session_types", "sponsors",
               "social_links", "forms", "media")

EXPORT_FAILURES = {
    "event_not_found": "The event no longer exists; it may have been deleted after the export was requested.",
    "storage_unavailable": "The file storage could not be reached, so the archive could not be saved. This is "
                           "usually temporary: please request the export again in a little while.",
    "storage_error": "The file storage did not accept the archive. Please request the export again; if it keeps "
                     "failing, contact the platform's operators.",
    "internal_error": "An internal error stopped the export. The operators have the details; please try again later.",
}
IMPORT_FAILURES = {
    "storage_unavailable": "The uploaded archive could not be read back from the file storage. This is usually "
                           "temporary: please upload it again in a little while.",
    "internal_error": "An internal error stopped the import. The operators have the details; please try again later.",
}


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


@dataclass
class _Body:
    """A mail body as blocks, rendered once as plain text and once as escaped HTML."""

    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def para(self, *sentences: str) -> None:
        value = " ".join(s for s in sentences if s)
        self.text.append(value)
        self.html.append(f"<p>{_e(value)}</p>")

    def link(self, label: str, url: str) -> None:
        self.text.append(f"{label}\n  {url}")
        if url.startswith(("https://", "http://")):  # never a javascript: or data: href
            self.html.append(f'<p>{_e(label)}<br><a href="{_e(url)}">{_e(url)}</a></p>')
        else:
            self.html.append(f"<p>{_e(label)}<br>{_e(url)}</p>")

    def facts(self, title: str, rows: Iterable[tuple[str, str]]) -> None:
        rows = list(rows)
        self.text.append(title + "\n" + "\n".join(f"  {k}: {v}" for k, v in rows))
        cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
        self.html.append(f"<p>{_e(title)}</p><table>{cells}</table>")

    def bullets(self, title: str, items: list[str]) -> None:
        self.text.append(title + "\n" + "\n".join(f"  - {item}" for item in items))
        lis = "".join(f"<li>{_e(item)}</li>" for item in items)
        self.html.append(f"<p>{_e(title)}</p><ul>{lis}</ul>")

    def render(self, subject: str) -> Mail:
        text = "\n\n".join(["Hello,", *self.text]) + "\n"
        body = "\n".join(self.html)
        page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_e(subject)}</title></head>\n'
                f"<body>\n<p>Hello,</p>\n{body}\n</body></html>\n")
        return Mail(subject=subject, text=text, html=page)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def one_line(value: str, limit: int = 150) -> str:
    """Collapse whitespace and control characters: a subject is one header line."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def readable_time(iso: str) -> str:
    try:
        moment = datetime.strptime(iso, UTC_FORMAT)
    except (TypeError, ValueError):
        return str(iso)
    return moment.strftime("%d %B %Y at %H:%M UTC").lstrip("0")


def readable_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"  # pragma: no cover - the loop always returns


def where(file: str | None = None, record_id: Any = None, field: str | None = None) -> str:
    """``file sessions, record 12, field start_time``: the parts that are known."""
    parts = []
    if file:
        parts.append(f"file {file}")
    if record_id not in (None, ""):
        parts.append(f"record {record_id}")
    if field:
        parts.append(f"field {field}")
    return ", ".join(parts)


def person_readable(message: str | None) -> str | None:
    """A producer's message fit for a person: one paragraph, bounded, never a stack trace."""
    if not message or "Traceback (most recent call last)" in message or re.search(r'File "[^"]+", line \d+', message):
        return None
    flat = one_line(message, MAX_DETAIL_CHARS)
    return flat or None


def _warning_items(warnings: list[dict[str, Any]], total: int) -> list[str]:
    items = []
    for w in warnings[:MAX_WARNINGS_LISTED]:
        place = where(w.get("file"), w.get("record_id"), w.get("field"))
        item = f"{place}: {w.get('message', '')}" if place else str(w.get("message", ""))
        if w.get("url"):
            item += f" ({w['url']})"
        items.append(one_line(item, MAX_DETAIL_CHARS))
    if total > len(items):
        items.append(f"...and {total - len(items)} more.")
    return items


def _failure(body: _Body, explanation: str, message: str | None) -> None:
    body.para("What went wrong:", explanation)
    detail = person_readable(message)
    if detail and detail != explanation:
        body.para("Details:", detail)


def _footer(body: _Body, what: str, task_id: str) -> None:
    body.para(f"You receive this message because you requested this {what} (task {task_id}).",
              "This is an automatic message.")


def export_event_label(name: str | None, event_id: int | None) -> str:
    """The event's name, or ``#<id>`` once it is gone from the database (e.g. deleted before its export ran)."""
    if name and name.strip():
        return one_line(name)
    return f"#{event_id}" if event_id is not None else "(unknown)"


def subject_event(name: str | None, event_id: int | None) -> str:
    """The event as a subject names it: ``FOSSASIA 2016 (#5)``, so mails about same-named events tell apart."""
    label = export_event_label(name, event_id)
    return label if event_id is None or label == f"#{event_id}" else f"{label} (#{event_id})"


def event_link(template: str | None, event_id: int, identifier: str | None) -> str | None:
    """EVENT_URL_TEMPLATE filled in for the event, or None (no template, or it needs an identifier the event lacks)."""
    if not template or ("{identifier}" in template and not identifier):
        return None
    return template.format(id=event_id, identifier=quote(identifier or "", safe=""))


def retention_sentence(retention: Any) -> str | None:
    """Where the archive itself is kept and until when (not the link's expiry); None for an older event without it."""
    if not isinstance(retention, dict) or not retention.get("backend"):
        return None
    backend = str(retention["backend"])
    where_ = "the platform's default storage" if backend == "default" else f'the storage "{one_line(backend, 64)}"'
    if retention.get("delete_at"):
        return (f"The archive is stored on {where_} until {readable_time(retention['delete_at'])}; "
                "it is deleted then.")
    return f"The archive is stored on {where_} and kept until it is deleted."


def render_export_completed(data: dict[str, Any], *, event_name: str | None, gateway_url: str) -> Mail:
    label = export_event_label(event_name, data["event_id"])
    body = _Body()
    body.para(f'The export of event "{label}" (id {data["event_id"]}) is ready.')
    # Schedule formats (frab XML, iCal...) are one file, not an archive; their warnings are not about media.
    archive = (data.get("format") or "json") == "json"
    what = "archive" if archive else f"{data['format']} file"
    body.link(f"Download the {what} (no login needed):", data["download_url"])
    # The fresh-link endpoint needs an access token, so it is named, not linked: the one link of the mail is the one
    # that opens in a browser without logging in.
    body.para(f"This link works until {readable_time(data['expires_at'])}.",
              f"After that, a logged-in organizer gets a fresh link from the platform's API ({gateway_url}) with an "
              f"access token: GET /v1/events/{data['event_id']}/exports/{data['task_id']} (it redirects to a new "
              "download link).")
    kept = retention_sentence(data.get("retention"))
    if kept:
        body.para(kept)
    body.facts(f"The {what}:", [("size", readable_size(data["size"])), ("SHA-256", data["sha256"])])
    if data["warnings_total"] and archive:
        body.bullets(f"{data['warnings_total']} media item(s) could not be included; they keep their original "
                     "URL in the archive:", _warning_items(data["warnings"], data["warnings_total"]))
    elif data["warnings_total"]:
        body.bullets(f"{data['warnings_total']} warning(s):", _warning_items(data["warnings"], data["warnings_total"]))
    _footer(body, "export", data["task_id"])
    return body.render(f"Event {subject_event(event_name, data['event_id'])} has been exported")


def render_export_failed(data: dict[str, Any], *, event_name: str | None) -> Mail:
    label = export_event_label(event_name, data["event_id"])
    body = _Body()
    body.para(f'The export of event "{label}" (id {data["event_id"]}) failed; no archive was produced.')
    _failure(body, EXPORT_FAILURES.get(data["code"], f"The export failed ({data['code']})."), data["message"])
    _footer(body, "export", data["task_id"])
    return body.render(f"Export of event {subject_event(event_name, data['event_id'])} failed")


def _sorted_counts(counts: dict[str, int]) -> list[tuple[str, str]]:
    known = [k for k in COUNT_ORDER if k in counts]
    rest = sorted(k for k in counts if k not in COUNT_ORDER)
    return [(k.replace("_", " "), str(counts[k])) for k in known + rest]


def render_import_completed(data: dict[str, Any], *, event_url: str | None = None) -> Mail:
    """``event_url``: the event where a browser opens it (EVENT_URL_TEMPLATE); without one the mail says where to
    find it instead of linking the API's address, which answers 401 without an access token."""
    name = one_line(data["event_name"]) or f"#{data['id']}"
    body = _Body()
    body.para(f'The event "{name}" has been imported (new event id {data["id"]}).')
    if event_url:
        body.link("The event:", event_url)
    else:
        body.para(f"You are its organizer: it is listed among your events on the platform (event id {data['id']};",
                  f"in the API, logged in: GET /v1/events/{data['id']}).")
    if data["counts"]:
        body.facts("Records imported:", _sorted_counts(data["counts"]))
    if data["warnings_total"]:
        body.bullets(f"{data['warnings_total']} warning(s): the import went ahead, but check these:",
                     _warning_items(data["warnings"], data["warnings_total"]))
    _footer(body, "import", data["task_id"])
    return body.render(f"Event {subject_event(data['event_name'], data['id'])} has been imported")


def render_import_failed(data: dict[str, Any]) -> Mail:
    filename = one_line(data.get("filename") or "", 100)
    body = _Body()
    if filename:
        body.para(f'The import of your archive "{filename}" failed; nothing was imported.')
    else:  # an event from before the importer named the file
        body.para("The import of your archive failed; nothing was imported.")
    place = where(data.get("file"), data.get("record_id"), data.get("field"))
    if place:
        body.para("Where:", place[0].upper() + place[1:] + ".")
    explanation = IMPORT_FAILURES.get(data["code"], "The archive could not be imported.")
    _failure(body, explanation, data["message"])
    body.para("Fix the archive and upload it again; nothing needs to be cleaned up first.")
    _footer(body, "import", data["task_id"])
    return body.render(f"Import of event failed: {filename}" if filename else "Import of event failed")


def render(kind: str, data: dict[str, Any], *, event_name: str | None, gateway_url: str,
           event_url: str | None = None) -> Mail:
    """The mail for a validated payload of ``kind`` (one of KINDS); ``event_url`` as for render_import_completed."""
    if kind == contracts.EXPORT_COMPLETED:
        return render_export_completed(data, event_name=event_name, gateway_url=gateway_url)
    if kind == contracts.EXPORT_FAILED:
        return render_export_failed(data, event_name=event_name)
    if kind == contracts.IMPORT_COMPLETED:
        return render_import_completed(data, event_url=event_url)
    if kind == contracts.IMPORT_FAILED:
        return render_import_failed(data)
    raise ValueError(f"no mail for {kind!r}")


def message_id(kind: str, task_id: str, domain: str) -> str:
    """Deterministic per task and kind: a resend (if ever) is recognisably the same message to receivers."""
    token = task_id if re.fullmatch(r"[A-Za-z0-9-]{1,64}", task_id) else re.sub(r"[^A-Za-z0-9-]", "-", task_id)[:64]
    return f"<{kind}.{token}@{domain}>"


def build_message(mail: Mail, *, sender: str, recipient: str, reply_to: str | None, msg_id: str,
                  date: datetime | None = None) -> str:
    """The complete RFC 5322 message (ASCII, CRLF), as stored in the delivery log and sent verbatim."""
    msg = EmailMessage()
    msg["Subject"] = mail.subject
    msg["From"] = sender
    msg["To"] = recipient
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = msg_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to a notification
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg.as_string(policy=SMTP)

"""Mail templates: subjects, both parts, escaping, and the complete message (pure functions, no broker)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from services.mailer import templates as t
from services.mailer.smtp import invalid_recipient
from shared import contracts

TASK = "3f2b8a9e-6c1d-4e5f-9a0b-1c2d3e4f5a6b"
WHO = {"id": 7, "email": "orga@example.org"}
EVIL = '<script>alert("x")</script> & "Tom\'s" Conf'
URL = "http://127.0.0.1:8001/objects/exports/event5/x/event5.zip?expires=1795000000&filename=event5.zip&signature=ab"


def export_completed(**extra) -> dict:
    fields = {"key": "exports/event5/x/event5.zip", "size": 1_234_567, "sha256": "a" * 64, "download_url": URL,
              "expires_at": "2026-11-22T10:07:00Z", "warnings": [], "warnings_total": 0, **extra}
    return contracts.make_payload(contracts.EXPORT_COMPLETED, task_id=TASK, event_id=5, requested_by=WHO, **fields)


def parts(mail: t.Mail) -> tuple[str, str]:
    return mail.text, mail.html


def test_export_completed_has_the_link_its_expiry_and_the_way_to_a_fresh_one():
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(), event_name="FOSSASIA 2016",
                    gateway_url="https://events.example.org")
    assert mail.subject == "Event FOSSASIA 2016 (#5) has been exported"
    text, html = parts(mail)
    assert URL in text
    assert f'href="{URL.replace("&", "&amp;")}"' in html
    assert "22 November 2026 at 10:07 UTC" in text and "22 November 2026 at 10:07 UTC" in html
    fresh = f"GET /v1/events/5/exports/{TASK}"
    assert fresh in text and fresh in html and "https://events.example.org" in text
    # The one link of the mail is the one that works in a browser without logging in: the endpoint for a fresh
    # link needs an access token, so it is named, never linked.
    assert re.findall(r'href="([^"]*)"', html) == [URL.replace("&", "&amp;")]
    assert re.findall(r"https?://\S+/v1/\S*", text) == []
    assert "no login needed" in text
    assert "1.2 MB" in text and "a" * 64 in text
    assert "could not be included" not in text  # no warnings, no warnings section


def test_export_completed_escapes_the_event_name_in_html_only():
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(), event_name=EVIL, gateway_url="http://gw")
    assert mail.subject == f"Event {EVIL} (#5) has been exported"
    text, html = parts(mail)
    assert EVIL in text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;Tom&#x27;s&quot; Conf" in html


def test_export_completed_lists_warnings_and_counts_the_rest():
    warnings = [{"code": "media_unavailable", "message": f"HTTP 404 for photo {i}", "file": "speakers",
                 "record_id": i, "field": "photo", "url": f"http://media.example.org/p{i}.jpg"} for i in range(25)]
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(warnings=warnings, warnings_total=30),
                    event_name="Conf", gateway_url="http://gw")
    text, html = parts(mail)
    assert "30 media item(s) could not be included" in text
    assert "file speakers, record 3, field photo: HTTP 404 for photo 3 (http://media.example.org/p3.jpg)" in text
    assert "record 19," in text and "record 20," not in text  # 20 listed
    assert "...and 10 more." in text and "...and 10 more." in html


def test_schedule_format_mail_names_the_file_and_its_warnings_are_not_media():
    warning = {"code": "sessions_not_scheduled", "file": "sessions",
               "message": "3 session(s) left out: no start time, or not accepted"}
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(format="ical", warnings=[warning], warnings_total=1),
                    event_name="Conf", gateway_url="http://gw")
    text, _ = parts(mail)
    assert "Download the ical file" in text and "The ical file:" in text
    assert "1 warning(s):" in text and "3 session(s) left out" in text
    assert "media item" not in text


def test_export_of_an_unknown_event_names_it_by_id():
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(), event_name=None, gateway_url="http://gw")
    assert mail.subject == "Event #5 has been exported"


def test_export_failed_explains_the_problem_in_words():
    payload = contracts.make_payload(contracts.EXPORT_FAILED, task_id=TASK, event_id=5, requested_by=WHO,
                                     code="event_not_found",
                                     message="Event 5 does not exist.")
    mail = t.render(contracts.EXPORT_FAILED, payload, event_name=None, gateway_url="http://gw")
    assert mail.subject == "Export of event #5 failed"
    assert "no longer exists; it may have been deleted after the export was requested" in mail.text
    assert "Details: Event 5 does not exist." in mail.text


def test_failure_mails_never_carry_a_stack_trace():
    trace = 'Traceback (most recent call last):\n  File "/app/x.py", line 3, in f\nKeyError: 1'
    payload = contracts.make_payload(contracts.EXPORT_FAILED, task_id=TASK, event_id=5, requested_by=WHO,
                                     code="internal_error",
                                     message=trace)
    mail = t.render(contracts.EXPORT_FAILED, payload, event_name="Conf", gateway_url="http://gw")
    assert mail.subject == "Export of event Conf (#5) failed"
    assert "Traceback" not in mail.text and "Traceback" not in mail.html and "x.py" not in mail.text
    assert "internal error" in mail.text


def test_import_completed_has_the_event_link_counts_and_warnings():
    payload = contracts.make_payload(
        contracts.IMPORT_COMPLETED, task_id=TASK, event_id=12, requested_by=WHO, id=12, event_name="Open Tech Summit",
        url="https://events.example.org/v1/events/12", counts={"speakers": 30, "sessions": 60, "event": 1,
                                                                "zebras": 2},
        warnings=[{"code": "dangling_reference", "message": "unknown track 99, left empty", "file": "sessions",
                   "record_id": 4, "field": "track"}], warnings_total=1)
    mail = t.render(contracts.IMPORT_COMPLETED, payload, event_name=None, gateway_url="http://gw",
                    event_url="https://frontend.example/e/otsummit")
    assert mail.subject == "Event Open Tech Summit (#12) has been imported"
    text, html = parts(mail)
    assert "https://frontend.example/e/otsummit" in text
    assert re.findall(r'href="([^"]*)"', html) == ["https://frontend.example/e/otsummit"]
    assert "/v1/events/12" not in text  # the API's address answers 401 in a browser
    assert text.index("event: 1") < text.index("sessions: 60") < text.index("speakers: 30") < text.index("zebras: 2")
    assert "file sessions, record 4, field track: unknown track 99, left empty" in text


def import_completed(**extra) -> dict:
    return contracts.make_payload(contracts.IMPORT_COMPLETED, task_id=TASK, event_id=12, requested_by=WHO, id=12,
                                  event_name="Open Tech Summit", url="https://events.example.org/v1/events/12",
                                  counts={"event": 1}, warnings=[], warnings_total=0, **extra)


def test_import_completed_without_a_frontend_says_where_to_find_the_event_instead_of_linking_the_api():
    mail = t.render(contracts.IMPORT_COMPLETED, import_completed(), event_name=None, gateway_url="http://gw")
    text, html = parts(mail)
    assert "href=" not in html and "https://events.example.org" not in text
    assert "listed among your events on the platform (event id 12;" in text
    assert "GET /v1/events/12" in text


@pytest.mark.parametrize(("template", "identifier", "link"), [
    ("https://frontend.example/e/{identifier}", "fossasia-16", "https://frontend.example/e/fossasia-16"),
    ("https://frontend.example/events/{id}/", None, "https://frontend.example/events/12/"),
    ("https://f.example/{identifier}?n={id}", "a b/c", "https://f.example/a%20b%2Fc?n=12"),
    ("https://frontend.example/e/{identifier}", None, None),  # the event has no identifier: no broken link
    (None, "x", None),
])
def test_event_link_fills_in_the_template(template, identifier, link):
    assert t.event_link(template, 12, identifier) == link


def test_export_mail_says_where_the_archive_is_kept_apart_from_the_links_expiry():
    kept = t.render(contracts.EXPORT_COMPLETED, export_completed(retention={"backend": "team-s3",
                                                                      "delete_at": "2026-12-21T10:07:00Z"}),
                    event_name="Conf", gateway_url="http://gw")
    assert 'The archive is stored on the storage "team-s3" until 21 December 2026 at 10:07 UTC' in kept.text
    assert "This link works until 22 November 2026 at 10:07 UTC." in kept.text  # the link's own expiry
    assert "team-s3" in kept.html
    forever = t.render(contracts.EXPORT_COMPLETED, export_completed(retention={"backend": "default",
                                                                               "delete_at": None}),
                       event_name="Conf", gateway_url="http://gw")
    assert "stored on the platform's default storage and kept until it is deleted." in forever.text
    older = t.render(contracts.EXPORT_COMPLETED, export_completed(), event_name="Conf", gateway_url="http://gw")
    assert "The archive is stored on" not in older.text  # an event from before retention was reported


def test_import_failed_names_the_uploaded_file():
    payload = contracts.make_payload(contracts.IMPORT_FAILED, task_id=TASK, event_id=None, requested_by=WHO,
                                     code="invalid_json",
                                     message="File sessions: not JSON", file="sessions", filename="FOSSASIA <11>.zip")
    mail = t.render(contracts.IMPORT_FAILED, payload, event_name=None, gateway_url="http://gw")
    assert mail.subject == "Import of event failed: FOSSASIA <11>.zip"
    assert 'The import of your archive "FOSSASIA <11>.zip" failed; nothing was imported.' in mail.text
    assert "FOSSASIA &lt;11&gt;.zip" in mail.html


def test_import_failed_says_where_and_what():
    payload = contracts.make_payload(contracts.IMPORT_FAILED, task_id=TASK, event_id=None, requested_by=WHO,
                                     code="invalid_record", message="start_time is not a date: '32/13/2016'",
                                     file="sessions", record_id=12, field="start_time")
    mail = t.render(contracts.IMPORT_FAILED, payload, event_name=None, gateway_url="http://gw")
    assert mail.subject == "Import of event failed"
    text, html = parts(mail)
    assert "Where: File sessions, record 12, field start_time." in text
    assert "start_time is not a date: '32/13/2016'" in text
    assert "start_time is not a date: &#x27;32/13/2016&#x27;" in html
    assert "nothing was imported" in text


def test_import_failed_without_location():
    payload = contracts.make_payload(contracts.IMPORT_FAILED, task_id=TASK, event_id=None, requested_by=WHO,
                                     code="not_a_zip", message="The file is not a zip archive.")
    mail = t.render(contracts.IMPORT_FAILED, payload, event_name=None, gateway_url="http://gw")
    assert "Where:" not in mail.text
    assert "The file is not a zip archive." in mail.text


def test_subject_is_one_line_whatever_the_event_name():
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(), event_name="Evil\r\nBcc: victim@example.org",
                    gateway_url="http://gw")
    assert mail.subject == "Event Evil Bcc: victim@example.org (#5) has been exported"
    raw = t.build_message(mail, sender="Platform <platform@example.org>", recipient="orga@example.org",
                          reply_to=None, msg_id=t.message_id(contracts.EXPORT_COMPLETED, TASK, "example.org"))
    parsed = email.message_from_string(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["Subject"] == mail.subject


def test_built_message_is_multipart_ascii_and_deterministic_in_its_id():
    mail = t.render(contracts.EXPORT_COMPLETED, export_completed(), event_name="Café Conf ☕", gateway_url="http://gw")
    msg_id = t.message_id(contracts.EXPORT_COMPLETED, TASK, "example.org")
    assert msg_id == f"<export_completed.{TASK}@example.org>"
    assert t.message_id(contracts.EXPORT_COMPLETED, TASK, "example.org") == msg_id
    raw = t.build_message(mail, sender="Platform <platform@example.org>", recipient="orga@example.org",
                          reply_to="help@example.org", msg_id=msg_id)
    raw.encode("ascii")  # 7-bit clean: any SMTP server takes it
    assert "\r\n" in raw
    parsed = email.message_from_string(raw, policy=email.policy.default)
    # (a long Message-ID is folded onto its own line, which parsers keep as leading whitespace)
    assert parsed["Message-ID"].strip() == msg_id and parsed["Reply-To"] == "help@example.org"
    assert parsed["Subject"] == "Event Café Conf ☕ (#5) has been exported"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == mail.text
    assert URL in parsed.get_body(("plain",)).get_content()
    assert "Café Conf ☕" in parsed.get_body(("html",)).get_content()


@pytest.mark.parametrize("address", ["orga@example.org", "first.last+tag@sub.example.co", "root@localhost"])
def test_plain_addresses_are_accepted(address):
    assert invalid_recipient(address) is None


@pytest.mark.parametrize("address", ["", "not an address", "a@b@c", "@example.org", "x@", "x@-bad-.org",
                                     "evil@example.org\r\nBcc: y@example.org", "two..dots@example.org",
                                     "Name <x@example.org>", "ünï@example.org", "x" * 250 + "@example.org"])
def test_invalid_addresses_are_refused(address):
    assert invalid_recipient(address)

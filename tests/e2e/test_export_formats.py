"""The export format registry (issue 10 item 7): declared formats, the request contract's ``format``, and the
gateway's ``POST /v1/events/<id>/export/<format>`` and ``GET /v1/formats`` on a running stack."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from shared import contracts
from shared.archive import formats
from tests.e2e.test_export_e2e import assert_error, system  # noqa: F401 - the module's stack fixture

REQUESTER = {"id": 1, "email": "a@example.org"}


def test_the_open_event_zip_is_the_first_format():
    first = formats.describe_formats()[0]
    assert first == {"identifier": "json", "extension": ".zip", "content_type": "application/zip",
                     "description": formats.OpenEventZip.description}
    assert formats.get_format("json").filename(7) == "event7.zip"
    assert formats.DEFAULT_FORMAT == "json"


def test_unknown_format_names_the_known_ones():
    with pytest.raises(formats.UnknownFormat, match="known formats: json, frab-xml, schedule-json"):
        formats.get_format("docx")


def test_a_format_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        formats.register(type("Again", (formats.OpenEventZip,), {}))


def test_export_request_carries_a_registered_format_defaulting_to_json():
    payload = contracts.make_payload(contracts.EXPORT_REQUESTED, task_id="t", event_id=1, requested_by=REQUESTER,
                                     options={}, format="json")
    assert contracts.load_payload(contracts.EXPORT_REQUESTED, payload)["format"] == "json"
    del payload["format"]  # a request from before the field: the Open Event zip
    assert contracts.load_payload(contracts.EXPORT_REQUESTED, payload)["format"] == "json"
    with pytest.raises(ValidationError, match="docx"):
        contracts.make_payload(contracts.EXPORT_REQUESTED, task_id="t", event_id=1, requested_by=REQUESTER,
                               options={}, format="docx")


def test_gateway_lists_the_formats(system):  # noqa: F811
    r = system.client("stranger").get("/v1/formats")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == formats.describe_formats()


def test_gateway_refuses_an_unknown_format_with_the_known_ones(system):  # noqa: F811
    r = system.client("organizer").post(f"/v1/events/{system.event_id}/export/docx", json={})
    error = assert_error(r, 404, "unknown_format")
    assert "json" in error["message"]


def test_gateway_json_export_still_succeeds(system):  # noqa: F811
    client = system.client("organizer")
    r = client.post(f"/v1/events/{system.event_id}/export/json", json={})
    assert r.status_code == 202, r.text
    task = client.wait_task(r.json()["task_url"])
    assert task["state"] == "SUCCESS", task
    assert task["result"]["key"].endswith(".zip")

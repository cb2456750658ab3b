"""The export flow on PostgreSQL, the production database (the other end-to-end tests use the SQLite default)."""

from __future__ import annotations

import io
import json
import zipfile

import requests

from tests.e2e.test_export_e2e import exported
from tests.support.e2e import stack_for


def test_export_on_postgresql(tmp_path, postgres_url):
    with stack_for(tmp_path, {"organizer": False}, database_url=postgres_url) as run:
        event_id = run.event("organizer", sessions=250)
        run.start()
        body = exported(run.client("organizer"), event_id)
        archive = zipfile.ZipFile(io.BytesIO(body))
        sessions = json.loads(archive.read("sessions"))
        assert len(sessions) == 250
        assert all(s["speakers"] and s["track"] and s["microlocation"] for s in sessions)
        assert json.loads(archive.read("meta"))["files"]["speakers"]["count"] == 125
        health = requests.get(run.url + "/health", timeout=30).json()
        assert health["database"]["migrations"]["at_head"] is True

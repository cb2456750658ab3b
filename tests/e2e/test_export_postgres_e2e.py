"""The export flow on PostgreSQL, the production database (the other end-to-end tests use the SQLite default)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import requests

from tests.e2e.test_export_e2e import PASSWORD, add_users, export
from tests.support.e2e import Client, make_env, start_stack
from tests.support.rabbit import create_vhost, delete_vhost
from tools.synthetic import create_synthetic_event


def test_export_on_postgresql(tmp_path, postgres_url):
    vhost = create_vhost()
    env = make_env(tmp_path, vhost, database_url=postgres_url)
    users = add_users(env, {"organizer": False})
    with env.db() as session:
        event_id = create_synthetic_event(session, sessions=250, owner_user_id=users["organizer"])
        session.commit()
    stack = start_stack(env)
    try:
        client = Client.login(env.env["GATEWAY_URL"], "organizer@example.org", PASSWORD)
        task = client.wait_task(export(client, event_id))
        assert task["state"] == "SUCCESS", task
        body = requests.get(task["result"]["download_url"], timeout=30).content
        assert hashlib.sha256(body).hexdigest() == task["result"]["sha256"]
        archive = zipfile.ZipFile(io.BytesIO(body))
        sessions = json.loads(archive.read("sessions"))
        assert len(sessions) == 250
        assert all(s["speakers"] and s["track"] and s["microlocation"] for s in sessions)
        assert json.loads(archive.read("meta"))["files"]["speakers"]["count"] == 125
        health = requests.get(env.env["GATEWAY_URL"] + "/health", timeout=30).json()
        assert health["database"]["migrations"]["at_head"] is True
    finally:
        stack.stop_all()
        delete_vhost(vhost)

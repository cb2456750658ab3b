"""Health of the system as the gateway sees it: broker, database (migrations at head) and each service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import eventlet
from kombu import Connection
from sqlalchemy import text
from sqlalchemy.engine import Engine
from werkzeug import Response

from services.api_gateway.context import Gateway
from shared.db import migration_status
from shared.http import json_response


def check_broker(amqp_uri: str, timeout: float = 3.0) -> dict[str, Any]:
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return {"ok": True}
    except Exception as exc:  # any failure to connect is the answer, not an error of this check
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def check_database(engine: Engine) -> dict[str, Any]:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = migration_status(engine)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    at_head = current == head
    result: dict[str, Any] = {"ok": at_head, "migrations": {"current": current, "head": head, "at_head": at_head}}
    if not at_head:
        result["error"] = "database schema is not at the latest migration: run 'python -m tools.cli migrate'"
    return result


def check_services(ping: Callable[[str], Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``ok``: the service answers. A service that answers but cannot do its job (the mailer whose mail server
    refuses everything) also reports ``status: degraded`` with a ``reason``, and its details (``delivery``)."""
    results = {}
    for name in names:
        try:
            reply = ping(name)
        except Exception as exc:
            results[name] = {"ok": False, "error": str(exc) or type(exc).__name__}
            continue
        result: dict[str, Any] = {"ok": True}
        if isinstance(reply, dict) and reply.get("status") == "degraded":
            result["status"] = "degraded"
            result["reason"] = (reply.get("delivery") or {}).get("reason") or "the service reports itself degraded"
        if isinstance(reply, dict) and isinstance(reply.get("delivery"), dict):
            result["delivery"] = reply["delivery"]
        results[name] = result
    return results


def problems(report: dict[str, Any]) -> list[str]:
    """Why the system is degraded, one line per component (empty when everything is ok)."""
    found = [f"{part}: {report[part].get('error', 'not ok')}" for part in ("broker", "database")
             if not report[part]["ok"]]
    for name, service in report["services"].items():
        if not service["ok"]:
            found.append(f"{name}: not answering ({service.get('error')})")
        elif service.get("status") == "degraded":
            found.append(f"{name}: {service['reason']}")
    return found


SERVICES = ("storage", "exporter", "importer", "mailer", "webhooks")


def system_health(gw: Gateway, ping: Callable[[str], Any]) -> Response:
    """``GET /health``: broker, database and each service (``ping(name)``), checked at once; 503 when degraded."""
    pool = eventlet.GreenPool()
    broker = pool.spawn(check_broker, gw.config.amqp_uri)
    services = pool.spawn(check_services, ping, SERVICES)
    with gw.db() as session:
        database = check_database(session.get_bind())
    report = {"broker": broker.wait(), "database": database, "services": services.wait()}
    reasons = problems(report)
    body = {"status": "degraded" if reasons else "ok", **({"reasons": reasons} if reasons else {}), **report}
    return json_response(body, status=503 if reasons else 200)

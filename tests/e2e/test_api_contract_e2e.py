"""The API contract, fuzzed: schemathesis against the running stack's ``GET /openapi.json``, for every route and
every role (admin, organizer, co-organizer, a plain user, anonymous).

Each (role, route) runs generated requests that fit the document (positive) and that break it (negative: wrong
types, missing fields, values out of range), and checks every answer: no 5xx, a documented status, the documented
content type, a body that matches the documented schema (error bodies included: their ``error.code`` must be one
the document lists for that status), and negative data refused with a 4xx. Path parameters are sometimes the real
ones of the stack (the organizer's event, a finished export, an uploaded file), so requests get past "not found".

Bounded and deterministic: ``MAX_EXAMPLES`` per (role, route, mode), Hypothesis derandomized (the same requests
on every run) and not shrinking (a failure names the request as sent, with a curl line to reproduce it).
Runs on PostgreSQL, the production database (skipped when none is reachable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api_gateway import api_docs, openapi
from shared.models import events as m
from tests.conftest import throwaway_postgres
from tests.support.e2e import Client, stack_for
from tests.support.smtp_server import SmtpServer

ROLES = ("admin", "organizer", "coorganizer", "user", "anonymous")
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "12"))
# Unset: derandomized, the same requests on every run (CI). A number: other requests, the same for that number.
SEED = os.environ.get("CONTRACT_SEED")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection]
# What negative data may get: a refusal, never a success and never a 5xx (not_a_server_error says so too).
REFUSALS = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
CONFIG = schemathesis.Config.from_dict({
    "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}},
    # The token is the role's (sent by the test); query parameters the API does not know are ignored, not refused.
    "generation": {"with-security-parameters": False, "allow-extra-parameters": False},
    "request-timeout": 30,
})
OPERATIONS = [(op.method, op.path) for op in api_docs.ROUTES]
PLAIN_STRING = {"type": "string"}


def _can_be_invalid(op: openapi.Op) -> bool:
    """Whether a request of ``op`` can break its documentation: a body, a query, or a path parameter that is more
    than any string (a URL path segment is always a string; a route without inputs has nothing to break)."""
    return op.body is not None or op.query is not None or op.paginated or any(
        {k: v for k, v in op.params.get(name, PLAIN_STRING).items() if k != "description"} != PLAIN_STRING
        for name in op.path_names)


NEGATABLE = {(op.method, op.path) for op in api_docs.ROUTES if _can_be_invalid(op)}


@dataclass
class Contract:
    url: str
    schema: Any
    tokens: dict[str, str]
    known: dict[str, Any]  # path parameter -> a value that names something real on this stack

    def headers(self, role: str) -> dict[str, str]:
        return {} if role == "anonymous" else {"Authorization": f"Bearer {self.tokens[role]}"}

    def real_path_values(self, path: str) -> dict[str, Any]:
        return {name: value for name, value in self.known.items() if "{" + name + "}" in path}


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    users = {"admin": True, "organizer": False, "coorganizer": False, "user": False}
    root = tmp_path_factory.mktemp("contract")
    # a mail server that accepts everything: /health answers 200 only while mail is delivered
    with SmtpServer(root / "smtp") as smtp, throwaway_postgres() as database_url, \
            stack_for(root, users, database_url=database_url, SMTP_PORT=str(smtp.port),
                      STORAGE_PROBE_TIMEOUT="2", QUOTA_JOBS_IN_FLIGHT="20") as run:
        event_id = run.event("organizer", sessions=5)
        with run.env.db() as session:
            session.add(m.EventRole(user_id=run.users["coorganizer"], event_id=event_id, role=m.ROLE_COORGANIZER))
            session.commit()
        run.start()
        organizer = run.client("organizer")
        exported = organizer.post(f"/v1/events/{event_id}/export/json", json={})
        assert exported.status_code == 202, exported.text
        task = organizer.wait_task(exported.json()["task_url"])
        assert task["state"] == "SUCCESS", task
        published = organizer.request("PUT", f"/v1/events/{event_id}/publication", json={"published": True})
        assert published.status_code == 200, published.text
        uploaded = organizer.post("/v1/upload/file", files={"file": ("notes.txt", b"contract test\n")})
        assert uploaded.status_code == 200, uploaded.text
        key = uploaded.json()["url"].split("/media/", 1)[1]
        tokens = {role: run.client(role).http.headers["Authorization"].split(" ", 1)[1] for role in users}
        schema = schemathesis.openapi.from_url(run.url + "/openapi.json", config=CONFIG)
        yield Contract(url=run.url, schema=schema, tokens=tokens,
                       known={"event_id": event_id, "task_id": task["id"], "path": task["id"], "key": key,
                              "identifier": "default", "user_id": run.users["coorganizer"]})


def test_the_served_document_is_the_one_the_code_builds(contract):
    served = requests.get(contract.url + "/openapi.json", timeout=10).json()
    assert {(m.upper(), p) for p, ops in served["paths"].items() for m in ops} == set(OPERATIONS)
    assert served["servers"] == [{"url": contract.url}]
    page = Client(contract.url).get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert Client(contract.url).get("/docs/swagger-ui-bundle.js").status_code == 200


def _strategy(contract: Contract, operation: Any, path: str, mode: GenerationMode) -> st.SearchStrategy:
    generated = operation.as_strategy(generation_mode=mode)
    real = contract.real_path_values(path)
    if not real:
        return generated
    return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=real))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_api_keeps_its_contract(contract, role, method, path):
    operation = contract.schema[path][method]
    headers = contract.headers(role)
    # /health's 503 is its documented answer for a degraded system (a service slow to answer on a loaded machine):
    # status, content type and body are still checked
    checks = [c for c in CHECKS if path != "/health" or c is not not_a_server_error]

    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if (method, path) in NEGATABLE else [])
    for mode in modes:
        @settings(max_examples=MAX_EXAMPLES, derandomize=SEED is None, database=None, deadline=None,
                  phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
        @given(case=_strategy(contract, operation, path, mode))
        def fuzz(case: Any) -> None:
            case.call_and_validate(base_url=contract.url, headers=headers, checks=checks)

        (fuzz if SEED is None else seed(int(SEED))(fuzz))()

"""deploy/k8s, offline: valid Kubernetes objects (kubernetes-validate's bundled schemas, strict: unknown fields fail),
KEDA objects against tests/support/keda_schema.py, the scalers on the contract's queues counting unacked messages,
the environment names matching what the code reads (tools/settings_inventory.py; docker-compose.yml too), probes,
grace periods against the drain deadline, and one Deployment and PodDisruptionBudget per service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared import contracts, drain
from tests.support.keda_schema import SCHEMAS
from tools import settings_inventory

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest version the manifests are meant for; newer ones accept them too
SERVICES = ("api_gateway", "storage", "exporter", "importer", "mailer", "webhooks")
DEFAULT_DRAIN_DEADLINE = int(drain.DEFAULT_DEADLINE)  # seconds: what a pod drains for without DRAIN_DEADLINE
GRACE_MARGIN = 15  # seconds the pod needs past the drain deadline at least (the manifests give 30)


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


DOCS = _documents()


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def _main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _service_of(deployment: dict[str, Any]) -> str:
    return {e["name"]: e.get("value") for e in _main_container(deployment)["env"]}["SERVICE"]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("doc", [d for d in DOCS if d["kind"] not in SCHEMAS],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_kubernetes_objects_are_valid(doc: dict[str, Any]) -> None:
    # Schemas bundled in the package (no network); strict: a field the API does not know is an error.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    deployment = yaml.safe_load(yaml.safe_dump(_of_kind("Deployment")["exporter"]))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 150
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("doc", [d for d in DOCS if d["kind"] in SCHEMAS],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_keda_objects_match_the_documented_fields(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, SCHEMAS[doc["kind"]])


def test_the_keda_schema_refuses_unknown_fields() -> None:
    scaled = yaml.safe_load(yaml.safe_dump(_of_kind("ScaledObject")["exporter"]))
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCHEMAS["ScaledObject"])
    scaled = yaml.safe_load(yaml.safe_dump(_of_kind("ScaledObject")["exporter"]))
    scaled["spec"]["triggers"][0]["metadata"]["includeUnacked"] = "true"  # KEDA 1.x, gone since 2.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCHEMAS["ScaledObject"])


@pytest.mark.parametrize(("deployment", "queue"), [("exporter", contracts.EXPORT_REQUEST_QUEUE),
                                                   ("importer", contracts.IMPORT_REQUEST_QUEUE)])
def test_workers_scale_on_their_request_queue_counting_unacked(deployment: str, queue: str) -> None:
    scaled = [s for s in _of_kind("ScaledObject").values() if s["spec"]["scaleTargetRef"]["name"] == deployment]
    assert len(scaled) == 1, f"one ScaledObject for {deployment}"
    spec = scaled[0]["spec"]
    assert deployment in _of_kind("Deployment")
    assert "replicas" not in _of_kind("Deployment")[deployment]["spec"], "KEDA owns the replica count"
    [trigger] = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert meta["queueName"] == queue
    # Only the management API (http) counts unacknowledged messages: running jobs are unacked.
    assert meta["protocol"] == "http" and meta["mode"] == "QueueLength"
    assert meta.get("excludeUnacknowledged", "false") == "false"
    auth = _of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in _of_kind("Secret")[ref["name"]]["stringData"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_one_deployment_and_disruption_budget_per_service() -> None:
    deployments = _of_kind("Deployment")
    assert sorted(_service_of(d) for d in deployments.values()) == sorted(SERVICES)
    budgets = _of_kind("PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets"
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_services_route_to_the_gateway_and_the_storage_data_plane() -> None:
    deployments = _of_kind("Deployment")
    config = _of_kind("ConfigMap")["eventport-config"]["data"]
    for name, port in (("api-gateway", 8000), ("storage", 8001)):
        service = _of_kind("Service")[name]
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for p in _main_container(deployments[name])["ports"]}
        assert ports["http"] == port
        env = {e["name"]: e.get("value") for e in _main_container(deployments[name])["env"]}
        assert env["WEB_SERVER_ADDRESS"] == f"0.0.0.0:{port}"
    assert config["STORAGE_INTERNAL_URL"] == "http://storage:8001"


def test_probes() -> None:
    for name, deployment in _of_kind("Deployment").items():
        container = _main_container(deployment)
        readiness, liveness = container["readinessProbe"], container["livenessProbe"]
        assert readiness != liveness, name
        if name == "api-gateway":
            assert readiness["httpGet"]["path"] == "/health"
            # /health answers 503 while a dependency is down: liveness must not restart the pod for that.
            assert liveness["httpGet"]["path"] == "/livez"
        elif "exec" in readiness:
            assert readiness["exec"]["command"][:4] == ["python", "-m", "tools.probe", _service_of(deployment)]
        # Liveness never depends on the broker or the database: this process's own HTTP server answers it.
        assert "httpGet" in liveness, name


def _grace_env(deployment: dict[str, Any]) -> dict[str, str]:
    env = dict(_of_kind("ConfigMap")["eventport-config"]["data"])
    env.update({e["name"]: e.get("value") for e in _main_container(deployment).get("env", [])})
    return env


def test_grace_period_covers_the_drain_deadline() -> None:
    for name, deployment in _of_kind("Deployment").items():
        deadline = int(_grace_env(deployment).get("DRAIN_DEADLINE", DEFAULT_DRAIN_DEADLINE))
        pod = deployment["spec"]["template"]["spec"]
        pre_stop = _main_container(deployment).get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = int(pre_stop["command"][1]) if pre_stop.get("command", [""])[0] == "sleep" else 0
        assert pod["terminationGracePeriodSeconds"] >= sleep + deadline + GRACE_MARGIN, name


def test_committed_secrets_are_placeholders() -> None:
    for name, secret in _of_kind("Secret").items():
        assert "data" not in secret, f"{name}: placeholders go in stringData"
        for key, text in secret["stringData"].items():
            assert "REPLACE-ME" in text, f"{name}.{key} is not a placeholder"
    # Too short to pass the services' check: a cluster running on the example Secret refuses to start.
    from shared.config import MIN_SECRET_BYTES

    assert len(_of_kind("Secret")["eventport-secrets"]["stringData"]["SECRET_KEY"]) < MIN_SECRET_BYTES


def test_migration_job_and_init_containers() -> None:
    [job] = _of_kind("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "tools.cli", "migrate"]
    for name, deployment in _of_kind("Deployment").items():
        [init] = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init["command"][:4] == ["python", "-m", "tools.cli", "wait-migrated"], name


# ------------------------------------------------------------------------------------------- environment names


def _env_names(container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(_of_kind("ConfigMap")[source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            names |= set(_of_kind("Secret")[source["secretRef"]["name"]]["stringData"])
    return names


def _containers() -> list[tuple[str, dict[str, Any], bool]]:
    """(where, container, whether it runs a service) of every Deployment and Job."""
    found = []
    for doc in DOCS:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            is_service = doc["kind"] == "Deployment" and container in pod["containers"]
            found.append((f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}", container, is_service))
    return found


READ = settings_inventory.read_names()
REQUIRED = settings_inventory.required_names()


def test_the_inventory_finds_the_settings_the_code_reads() -> None:
    # One of each kind of reader: env_or, _flag, a table, nameko.yml, the Dockerfile, a library, a local get().
    assert {"DATABASE_URL", "DEV_MODE", "IMPORT_MAX_STRING_CHARS", "S3_BUCKET", "AMQP_HEARTBEAT", "SERVICE",
            "AWS_SECRET_ACCESS_KEY", "METRICS_PORT", "SMTP_HOST", "HTTP_HEADER_TIMEOUT", "QUOTA_JOBS_IN_FLIGHT"} <= READ
    assert {"SECRET_KEY", "DATABASE_URL", "AMQP_URI", "SERVICE", "SMTP_HOST"} <= REQUIRED <= READ
    assert "PATH_INFO" not in READ  # a WSGI environ key, not a setting


@pytest.mark.parametrize(("where", "container", "is_service"), _containers(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_manifest_env_is_what_the_code_reads(where: str, container: dict[str, Any], is_service: bool) -> None:
    names = _env_names(container)
    assert not names - READ, f"{where} sets variables no code reads: {sorted(names - READ)}"
    needed = REQUIRED if is_service else {"DATABASE_URL"}
    assert not needed - names, f"{where} misses required settings: {sorted(needed - names)}"
    if is_service and any(p["name"] == "http" for p in container.get("ports", [])):
        assert "WEB_SERVER_ADDRESS" in names


def test_compose_env_is_what_the_code_reads() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    app = {name: s for name, s in compose["services"].items() if "build" in s}
    assert {"api_gateway", "exporter", "importer", "storage", "mailer", "migrate"} <= set(app)
    for name, service in app.items():
        names = set(service["environment"])
        assert not names - READ, f"compose {name} sets variables no code reads: {sorted(names - READ)}"
        if name != "migrate":
            assert not REQUIRED - names, f"compose {name} misses {sorted(REQUIRED - names)}"

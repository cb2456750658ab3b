"""Exec probe: ``python -m tools.probe <service> [--timeout S]`` calls the service's ``health`` RPC over AMQP
(``AMQP_URI``) and exits 0 when it answers in time, 1 otherwise (the reason on stderr).

Any answer counts, ``degraded`` included (the mailer says so while its mail server refuses): the service is up and
taking messages. The call goes to the service's shared RPC queue, so any replica may answer it: it tells whether the
service answers on the broker, not whether this pod does (deploy/README.md, Probes).

Cheap, because it runs every few seconds in every pod: kombu alone (importing nameko and eventlet would cost ten times
the CPU), one connection, one exclusive reply queue, one message. nameko's RPC on the wire: a JSON
``{"args", "kwargs"}`` published to the ``nameko-rpc`` topic exchange with routing key ``<service>.<method>``,
``reply_to`` and ``correlation_id``; the answer ``{"result", "error"}`` comes back on the exchange with routing key
``reply_to``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from kombu import Connection, Consumer, Exchange, Producer, Queue

DEFAULT_TIMEOUT = 5.0
RPC_EXCHANGE = Exchange("nameko-rpc", type="topic", durable=True)  # nameko's default rpc_exchange


def probe(service: str, amqp_uri: str, timeout: float) -> str | None:
    """None when ``service`` answered its health RPC within ``timeout`` seconds, else why not."""
    deadline = time.monotonic() + timeout
    reply_key = f"probe-{uuid.uuid4().hex}"
    correlation_id = uuid.uuid4().hex
    replies: list[dict] = []

    def on_reply(body: dict, message) -> None:  # noqa: ANN001 - kombu's Message
        if message.properties.get("correlation_id") == correlation_id:
            replies.append(body)
        message.ack()

    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            channel = conn.channel()
            queue = Queue(reply_key, exchange=RPC_EXCHANGE, routing_key=reply_key, exclusive=True, auto_delete=True,
                          durable=False)
            with Consumer(channel, queues=[queue], callbacks=[on_reply], accept=["json"]):
                Producer(channel).publish({"args": [], "kwargs": {}}, exchange=RPC_EXCHANGE,
                                          routing_key=f"{service}.health", serializer="json", reply_to=reply_key,
                                          correlation_id=correlation_id, declare=[RPC_EXCHANGE])
                while not replies:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return f"no answer within {timeout:g} s"
                    try:
                        conn.drain_events(timeout=left)
                    except TimeoutError:
                        continue
    except Exception as exc:  # broker unreachable, refused login, connection lost: all mean "not healthy"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    reply = replies[0]
    if reply.get("error"):
        return f"health answered an error: {reply['error'].get('exc_type')}: {reply['error'].get('value')}"
    if not isinstance(reply.get("result"), dict):
        return f"unexpected answer {reply.get('result')!r}"
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

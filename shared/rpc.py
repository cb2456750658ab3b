"""RPC with a deadline: nameko's in-service RpcProxy waits forever for a stopped service.

(docs/architecture.md fact 3)
"""

from __future__ import annotations

from typing import Any

import eventlet


class RpcTimeout(Exception):
    """The remote service did not answer in time: stopped, overloaded or unreachable."""


def call(proxy: Any, method_name: str, /, *args: Any, timeout: float, **kwargs: Any) -> Any:
    """Call ``proxy.<method_name>`` and wait at most ``timeout`` seconds for the answer."""
    reply = getattr(proxy, method_name).call_async(*args, **kwargs)
    try:
        with eventlet.Timeout(timeout):
            return reply.result()
    except eventlet.Timeout as exc:
        raise RpcTimeout(f"{proxy.service_name}.{method_name} did not answer within {timeout:g} s") from exc

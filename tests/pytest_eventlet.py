"""Loaded with ``-p`` (pyproject's addopts), so before the plugins installed packages register (schemathesis, anyio):
those import ``ssl``, and boto3 then recurses unless eventlet patched first (docs/architecture.md fact 7)."""

import eventlet

eventlet.monkey_patch()

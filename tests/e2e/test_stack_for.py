"""``stack_for`` cleans up after itself: whatever a test's set-up started is stopped and its vhost deleted, also when
the set-up fails (before, a failed set-up left nameko services running)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.support.e2e import stack_for
from tests.support.rabbit import AUTH, MGMT_URL


def _vhost_exists(name: str) -> bool:
    r = requests.get(f"{MGMT_URL}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10)
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def _processes_with(var_dir: Path) -> list[int]:
    """Pids of live processes whose environment names ``var_dir`` as their VAR_DIR."""
    marker = f"VAR_DIR={var_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_a_set_up_failing_after_the_start_stops_the_services_and_deletes_the_vhost(tmp_path):
    with pytest.raises(AssertionError, match="set-up failed"), stack_for(tmp_path, {"alice": False}) as run:
        stack = run.start(("storage",))
        vhost, var_dir = run.vhost, run.env.var_dir
        assert stack.running("storage") and _processes_with(var_dir) and _vhost_exists(vhost)
        raise AssertionError("set-up failed")
    assert not stack.running("storage")
    assert _processes_with(var_dir) == []
    assert not _vhost_exists(vhost)


def test_a_stack_that_never_gets_healthy_is_stopped_too(tmp_path):
    # A secret the services refuse: they exit, and the health wait gives up.
    with pytest.raises(RuntimeError, match="exited"), stack_for(tmp_path, SECRET_KEY="", DEV_MODE="") as run:
        vhost, var_dir = run.vhost, run.env.var_dir
        run.start()
    assert _processes_with(var_dir) == []
    assert not _vhost_exists(vhost)

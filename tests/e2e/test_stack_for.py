"""``stack_for`` cleans up after itself: whatever a test's set-up started is stopped and its vhost deleted, also when
the set-up fails (before, a failed set-up left nameko services running)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.support.e2e import stack_for
from tests.support.rabbit import AUTH, MGMT_URL
from tests.support.waiting import wait_until


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


def test_replicas_get_their_own_ports_behind_one_storage_url_and_are_stopped_with_the_block(tmp_path):
    with stack_for(tmp_path, replicas={"storage": 2}) as run:
        stack = run.start(("storage", "storage.1"))
        var_dir, proxy = run.env.var_dir, run.storage_proxy
        assert stack.instances("storage") == ["storage", "storage.1"]
        urls = [stack.url(name) for name in stack.instances("storage")]
        assert len(set(urls + [run.storage])) == 3  # each instance its own port, the proxy on STORAGE_URL
        session = requests.Session()
        session.trust_env = False
        deadline = time.monotonic() + 60
        while not all(proxy.connections().values()):  # the proxy's round robin reaches both instances
            assert time.monotonic() < deadline, proxy.connections()
            try:
                session.get(run.storage + "/health", timeout=5, headers={"Connection": "close"})
            except requests.RequestException:
                time.sleep(0.2)  # not listening yet
        assert sorted(proxy.connections()) == sorted(u.split("//", 1)[1] for u in urls)
        pid = run.kill("storage.1")
        assert not stack.running("storage.1") and stack.running("storage")
        stack.start("storage.1")  # same port again
        assert stack.url("storage.1") == urls[1] and run.pid("storage.1") != pid
    assert not _processes_with(var_dir) and proxy.proc is None


def test_a_new_instance_on_the_old_ones_port_keeps_the_url_answering_after_the_old_one_stops(tmp_path):
    with stack_for(tmp_path) as run:
        stack = run.start(("storage",))
        port = int(run.storage.rsplit(":", 1)[1])
        new = stack.add("storage", same_port_as="storage")
        assert new == "storage.1" and stack.url(new) == stack.url("storage") == run.storage
        for name in ("storage", new):  # both bind the port (SO_REUSEPORT) and listen on it
            wait_until(f"{name} listening", lambda name=name: port in stack.local_ports(name, listening=True), 60)
        assert stack.stop("storage") == 0  # SIGTERM: drained, exited by itself
        session = requests.Session()
        session.trust_env = False
        r = session.get(run.storage + "/health", timeout=10)
        assert r.status_code == 200 and stack.running(new), r.text
        assert stack.add("storage") == "storage.2"  # a fresh index, never one an instance had
        assert stack.url("storage.2") not in (run.storage, stack.url(new))

"""The README's "Try it" block, run literally with bash against `make run` on a fresh ``var/`` (issue 8 item 23).

It runs in a copy of the working tree, so ``.venv/bin/python`` and ``../shared/samples`` resolve as they do for a
user, on the ports the README names (8000, 8001, 8025). The block drives the ``eventport`` CLI that ``make run``
installs; its login goes to a config folder of the test's own (``XDG_CONFIG_HOME``), not the user's. Checks what a
user would look at: the login file is private and the token never shows, the archive downloads and ``unzip -l``
lists its files, the export mail lands in ``var/mail/new`` and its link downloads without credentials.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, SAMPLES_DIR
from tests.support.rabbit import amqp_uri, create_vhost, delete_vhost
from tests.support.run_command import RunCommand, clean_env, repo_copy

README_PORTS = {8000: "the API", 8001: "storage", 8025: "the mail sink"}


def try_it_block(readme: Path) -> str:
    """The first ``sh`` block of the section whose title starts with "Try it"."""
    text = readme.read_text()
    section = re.search(r"^## Try it.*?(?=^## )", text, re.M | re.S)
    assert section, "README has no '## Try it' section"
    block = re.search(r"^```sh\n(.*?)^```", section.group(0), re.M | re.S)
    assert block, "the 'Try it' section has no ```sh block"
    return block.group(1)


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _mails(new: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in sorted(new.glob("*"))]


def _wait_for_mail(new: Path, subject: str, to: str, timeout: float) -> email.message.EmailMessage:
    """The first mail to ``to`` with ``subject``; other mail in the sink is not ours (the sink listens on the
    well-known port 8025, where any stack left at the default SMTP_PORT delivers, a benchmark's for instance)."""
    deadline = time.monotonic() + timeout
    while True:
        for mail in _mails(new) if new.is_dir() else []:
            if subject in str(mail["Subject"]) and to in str(mail["To"]):
                return mail
        if time.monotonic() > deadline:
            found = [str(m["Subject"]) for m in _mails(new)] if new.is_dir() else f"{new} does not exist"
            raise AssertionError(f"no mail with {subject!r} in {new} after {timeout} s; found: {found}")
        time.sleep(0.1)


@pytest.fixture
def run(tmp_path):
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"samples not found at {SAMPLES_DIR}: the README's block loads one")
    busy = [f"port {port} ({what})" for port, what in README_PORTS.items() if _port_in_use(port)]
    if busy:
        pytest.fail(f"{', '.join(busy)} in use: the README's block talks to localhost:8000, so this test needs "
                    "the README's ports; stop whatever holds them (another `make run`?)")
    repo = repo_copy(tmp_path)
    assert not (repo / "var").exists()
    vhost = create_vhost()  # the block never names the broker: a vhost of its own keeps other runs' queues apart
    command = RunCommand(repo, clean_env(AMQP_URI=amqp_uri(vhost)))
    try:
        command.wait_for("\nready: ", timeout=120)
        yield repo, command
    finally:
        command.kill()
        delete_vhost(vhost)


def test_readme_try_it_block_works_as_written(run, tmp_path):
    repo, command = run
    script = repo / "try_it.sh"
    script.write_text(try_it_block(REPO / "README.md"))
    config = tmp_path / "config"
    # -e stops at the first failing command; no pipefail, as in a user's shell (`curl | grep -q` may end curl early).
    try:
        done = subprocess.run(["bash", "-e", str(script)], cwd=repo, env=clean_env(XDG_CONFIG_HOME=str(config)),
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the README block did not finish in 600 s:\n{exc.stdout}\n{exc.stderr}\n{command.tail()}")
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n{command.tail()}"

    # The CLI's login: a private file, and the token in no output.
    credentials = config / "eventport" / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    token = json.loads(credentials.read_text())["servers"]["http://127.0.0.1:8000"]["token"]
    assert token not in done.stdout and token not in done.stderr

    # The download: a zip of the Open Event files, which unzip -l listed.
    archives = sorted(repo.glob("event*.zip"))
    assert len(archives) == 1, archives
    archive = archives[0].read_bytes()
    with zipfile.ZipFile(archives[0]) as z:
        names = z.namelist()
    for name in ("event", "sessions", "speakers", "tracks", "microlocations", "meta"):
        assert name in names
        assert re.search(rf"^\s*\d+\s+\S+\s+\S+\s+{name}$", done.stdout, re.M), done.stdout[-3000:]

    # The export mail, in the Maildir the README points at, with a link that works without credentials.
    mail = _wait_for_mail(repo / "var" / "mail" / "new", "has been exported", "orga@example.org", timeout=60)
    text = mail.get_body(("plain",)).get_content()
    # As a mail client's autolinker reads them: a closing bracket or a sentence's full stop is not part of a URL.
    links = [link.rstrip(".,;:") for link in re.findall(r"https?://[^\s<>()\"']+", text)]
    anonymous = requests.Session()
    anonymous.trust_env = False  # no credentials, no proxy: a browser on this machine
    downloads = [anonymous.get(link, timeout=30) for link in links]
    statuses = [(link, r.status_code) for link, r in zip(links, downloads, strict=True)]
    assert any(r.status_code == 200 and r.content == archive for r in downloads), \
        f"no link of the mail downloads the archive: {statuses}"

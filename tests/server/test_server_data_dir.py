"""The data directory is the owner's alone, and passwords never travel in a command line (issue 9)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from support.api import Api, login, make_steps, wait_for

from agents_bar_stream.server.process import LocalServer

pytestmark = pytest.mark.timeout(180)


def _open_entries(root) -> list:
    """Entries under ``root`` (and ``root`` itself) that a group or other users can read or enter."""
    out = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            out.append(f"{path.relative_to(root.parent)} {stat.S_IMODE(st.st_mode):o}")
    return out


def test_a_data_dir_that_existed_open_is_made_private(tmp_path, user):
    """The project's own helper created the data dir (0755) before the server; the database with
    the password hashes, server.log and weights/ were then world-readable."""
    data = tmp_path / "open-data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "server.log").write_text("an old log\n")
    os.chmod(data / "server.log", 0o644)
    srv = LocalServer(data, users=[user], extra_args=["--save-interval", "0.2"])
    try:
        srv.start(timeout=120)
        api = Api(srv.url, login(srv.url, *user))
        api.create_agent("private", "dqn", obs_size=4, action_size=2, warm_up=0, batch_size=16)
        assert api.send_steps("private", "p", 0, make_steps(0, 100)).status_code == 200
        wait_for(lambda: list((data / "weights").glob("agent-*.pt")), timeout=60, message="a weights save")
        assert (data / "agents-bar.sqlite3").exists()
        assert _open_entries(data) == []
        assert "readable by other users" in srv.log_path.read_text()
    finally:
        srv.stop(timeout=30)
    assert _open_entries(data) == []


def test_passwords_are_not_in_the_process_list(server_factory, user):
    srv = server_factory()
    with open(f"/proc/{srv.process.pid}/cmdline", "rb") as fh:
        cmdline = fh.read().decode(errors="replace")
    for password in ("alice-password-1", "bob-password-2"):
        assert password not in cmdline
    # The helper's user file is gone once the server has read it.
    args = cmdline.split("\0")
    assert "--user-file" in args
    assert not os.path.exists(args[args.index("--user-file") + 1])
    assert login(srv.url, *user)


def test_a_password_argument_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "agents_bar_stream", "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
         "--user", "carol:carol-password"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "process list" in proc.stderr or "ps" in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_user_name_with_the_password_from_the_environment(server_factory, monkeypatch):
    monkeypatch.setenv("AGENTS_BAR_PASSWORD", "carol-password-3")
    monkeypatch.delenv("AGENTS_BAR_USERNAME", raising=False)
    srv = server_factory(users={"alice": "alice-password-1"}, extra_args=["--user", "carol"])
    assert login(srv.url, "carol", "carol-password-3")
    assert login(srv.url, "alice", "alice-password-1")

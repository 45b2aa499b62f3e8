"""``serve --store``: bad values and an unreachable or lost database are told plainly (exit status, 503)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.api import Api, login

from agents_bar_stream.server.process import LocalServer

USER = ("alice", "alice-password-1")
pytestmark = pytest.mark.timeout(120)


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents_bar_stream", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)


def test_a_store_url_of_no_known_kind_is_refused(tmp_path):
    done = _serve("--store", "mysql://x/y", "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "unknown store 'mysql://x/y'" in done.stderr


def test_an_unreachable_database_stops_the_start_with_a_message(tmp_path):
    # A socket directory where no PostgreSQL listens.
    done = _serve("--store", f"postgresql://postgres@/postgres?host={tmp_path}")
    assert done.returncode == 1, done.stderr
    assert "cannot open the PostgreSQL store" in done.stderr and "Traceback" not in done.stderr


def test_a_lost_database_is_a_503_and_nothing_is_applied(pg_databases, tmp_path):
    name, url = pg_databases.create()
    server = LocalServer(tmp_path / "replica", users=[USER], extra_args=["--store", url, "--no-learn"])
    try:
        server.start(120)
        api = Api(server.url, login(server.url, *USER))
        api.create_agent("a")
        pg_databases.drop(name)  # the fault: every connection of the replica is cut, the database gone
        step = {"obs": [0.0] * 4, "action": [0], "reward": 0.0, "next_obs": [0.0] * 4, "done": False}
        for _ in range(3):  # broken pooled connections first, then failed reconnections: all 503
            resp = api.send_steps("a", "p", 0, [step])
            assert resp.status_code == 503, resp.text
            assert "try again later" in resp.json()["detail"] and resp.headers["Retry-After"]
        assert server.running
    finally:
        server.stop(30)
    log = server.log_path.read_text()
    assert "storage error on POST" in log and "unexpected error" not in log  # 503s, never a 500
    assert log.count("learner placement failed") == 1  # the outage is not logged every second

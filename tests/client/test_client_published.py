"""An unchanged program written for agents-bar 0.4.2 runs on agents_bar_stream (and on the original)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

PROGRAM = Path(__file__).with_name("published_program.py")
DEFAULT_COMPAT_PYTHON = "/tmp/compat/bin/python"


def compat_python() -> str | None:
    """The interpreter that has the published client: $AGENTS_BAR_COMPAT_PYTHON, else the usual venv."""
    for candidate in (os.environ.get("AGENTS_BAR_COMPAT_PYTHON"), DEFAULT_COMPAT_PYTHON):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def run_program(python: str, module: str, server, user, agent_name: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_BAR")}
    env.update(
        AGENTS_BAR_MODULE=module,
        AGENTS_BAR_URL=server.url,
        AGENTS_BAR_USER=user[0],
        AGENTS_BAR_PASS=user[1],
        AGENTS_BAR_AGENT_NAME=agent_name,
        AGENTS_BAR_STREAM_QUEUE_ROOT=str(tmp_path / "queues"),  # never the user's cache
    )
    return subprocess.run(
        [python, str(PROGRAM)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=75
    )


def test_published_program_on_agents_bar_stream(server, user, agent_name, tmp_path):
    proc = run_program(sys.executable, "agents_bar_stream", server, user, agent_name, tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.split() == ["OK", "agents_bar_stream"]


def test_published_program_on_the_published_client(server, user, agent_name, tmp_path):
    python = compat_python()
    if python is None:
        pytest.skip("no interpreter with agents-bar 0.4.2 (set AGENTS_BAR_COMPAT_PYTHON)")
    proc = run_program(python, "agents_bar", server, user, agent_name, tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.split() == ["OK", "agents_bar"]


def test_program_fails_loudly_when_a_check_fails(server, user, agent_name, tmp_path):
    # The program's exit status is what the tests above rely on: prove it is not always 0.
    proc = run_program(sys.executable, "agents_bar_stream", server, ("alice", "wrong-password"), agent_name, tmp_path)
    assert proc.returncode != 0

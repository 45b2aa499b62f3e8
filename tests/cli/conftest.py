"""Helpers for the command line tests: run ``python -m agents_bar_stream`` as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

_OUR_ENV = ("AGENTS_BAR_URL", "AGENTS_BAR_ACCESS_TOKEN", "AGENTS_BAR_USERNAME", "AGENTS_BAR_PASSWORD",
            "AGENTS_BAR_USER", "AGENTS_BAR_PASS", "AGENTS_BAR_STREAM_QUEUE_ROOT")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(tmp_path):
    """``cli(*args, env=None, timeout=60) -> Run``: the command in a subprocess, with a clean environment.

    The environment has none of our variables except a queue root inside ``tmp_path`` (so no
    test ever touches the user's queues), plus what ``env`` adds.
    """
    base = {k: v for k, v in os.environ.items() if k not in _OUR_ENV}
    base["AGENTS_BAR_STREAM_QUEUE_ROOT"] = str(tmp_path / "queue-root")

    def run(*args: str, env: dict | None = None, timeout: float = 60) -> Run:
        proc = subprocess.run([sys.executable, "-m", "agents_bar_stream", *args], env={**base, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def creds(user) -> dict:
    """The environment that gives the command line ``user``'s credentials."""
    return {"AGENTS_BAR_USERNAME": user[0], "AGENTS_BAR_PASSWORD": user[1]}


def _one_line_error(run: Run, code: int, *needles: str) -> None:
    assert run.code == code, (run.code, run.out, run.err)
    assert "Traceback" not in run.err, run.err
    assert len(run.err_lines) == 1, run.err
    for needle in needles:
        assert needle in run.err, (needle, run.err)


@pytest.fixture
def one_line_error():
    """``check(run, code, *needles)``: exit ``code``, exactly one line on stderr holding every needle, no traceback."""
    return _one_line_error

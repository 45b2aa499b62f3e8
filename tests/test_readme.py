"""The README's examples run, and its set-up commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", setup, flags=re.S)
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "demo" in demo and "demo" not in tests
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    # .ci/run is the README's test command, split at its `&&`.
    assert [part.strip() for part in tests.split("&&")] == ci_lines[-2:]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_examples_run(index, server, user, tmp_path):
    code = _blocks("python")[index]
    env = dict(os.environ, AGENTS_BAR_URL=server.url, AGENTS_BAR_USERNAME=user[0], AGENTS_BAR_PASSWORD=user[1],
               AGENTS_BAR_STREAM_QUEUE_ROOT=str(tmp_path / "queues"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

"""The published ``agents-bar==0.4.2`` client, unchanged, against our server.

It needs its own interpreter (the published client pins old dependencies): set
``AGENTS_BAR_COMPAT_PYTHON`` to a python that has ``agents_bar`` installed (tox does).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "compat" / "published_client_check.py"
ENV_PYTHON = "AGENTS_BAR_COMPAT_PYTHON"


@pytest.mark.timeout(180)
def test_published_client_works_unchanged(server, user):
    python = os.environ.get(ENV_PYTHON)
    if not python:
        pytest.skip(f"{ENV_PYTHON} is not set (point it to a python with agents-bar==0.4.2 installed)")
    if not Path(python).exists():
        pytest.fail(f"{ENV_PYTHON}={python} does not exist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_BAR_")}
    env.update(AGENTS_BAR_USER=user[0], AGENTS_BAR_PASS=user[1], PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [python, str(SCRIPT), "--url", server.url, "--models", "dqn,ppo,ddpg,rainbow"],
        check=False,
        env=env,
        cwd=str(SCRIPT.parent),  # never the repo root: the published client must not see this project
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "all checks passed" in proc.stdout

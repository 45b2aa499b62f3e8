"""--help of every command, usage errors, and what importing the command line costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    [], ["serve"], ["queue"], ["queue", "status"], ["queue", "replay"], ["queue", "dead-letters"],
    ["queue", "purge"], ["agents"], ["agents", "list"], ["agents", "create"], ["agents", "delete"], ["demo"],
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c) or "top")
def test_help_explains_the_command(cli, command):
    run = cli(*command, "--help")
    assert run.code == 0, run.err
    assert run.out.startswith("usage: agents-bar-stream"), run.out
    assert run.err == ""
    # Every help page says something beyond the usage line.
    description = run.out.split("\n\n", 2)[1]
    assert len(description.split()) >= 4, run.out


@pytest.mark.timeout(30)
def test_help_names_what_each_command_needs(cli):
    assert "--yes" in cli("queue", "purge", "--help").out
    assert "--requeue" in cli("queue", "dead-letters", "--help").out
    replay = cli("queue", "replay", "--help").out
    assert "--timeout" in replay and "AGENTS_BAR_USERNAME" in replay
    demo = cli("demo", "--help").out
    for option in ("--url", "--episodes", "--flaky", "--seed", "--plot", "--quiet"):
        assert option in demo


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args, needle", [
    (["frobnicate"], "invalid choice"),
    (["queue"], "required"),
    (["queue", "replay"], "required"),
    (["agents", "create", "x", "--obs-size", "4", "--action-size", "2"], "--model"),
    (["agents", "create", "x", "--model", "dqn", "--obs-size", "zero", "--action-size", "2"], "positive integer"),
    (["demo", "--episodes", "0"], "positive integer"),
    (["queue", "replay", "somewhere", "--timeout", "-1"], "positive"),
    (["agents", "list", "--bogus"], "unrecognized arguments"),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_bad_usage_is_exit_2_with_one_line(cli, one_line_error, args, needle):
    one_line_error(cli(*args), 2, needle, "--help")


@pytest.mark.timeout(30)
def test_no_command_prints_help_and_exit_2(cli):
    run = cli()
    assert run.code == 2
    assert "usage:" in run.out


@pytest.mark.timeout(30)
def test_importing_the_command_line_stays_light():
    code = ("import sys, agents_bar_stream.cli as c; c.build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'uvicorn', 'torch', 'numpy', 'gymnasium', 'matplotlib', 'aitraineree'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.strip() == "[]"

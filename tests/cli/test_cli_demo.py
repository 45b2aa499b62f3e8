"""``demo``: a short run end to end, with its own local server."""

from __future__ import annotations

import re

import pytest


@pytest.mark.timeout(180)
def test_a_short_demo_run_reports_and_plots(cli, tmp_path):
    plot = tmp_path / "curve.png"
    run = cli("demo", "--episodes", "3", "--plot", str(plot), timeout=170)
    assert run.code == 0, (run.out, run.err)
    assert "Traceback" not in run.err
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "not solved in 3 episodes" in run.out
    assert "exactly once" in run.out
    # Not a terminal: plain progress lines, no carriage returns.
    assert "\r" not in run.err and "3/3 100%" in run.err
    # Every act() is accounted for: the server's answers, the local policy's, random ones (policy auto).
    steps = int(re.search(r"\((\d+) steps, ", run.out).group(1))
    acts = re.search(r"act\(\) \(auto\): (\d+) answered by the server, (\d+) by the agent's policy run here"
                     r".*, (\d+) random", run.out)
    assert acts, run.out
    remote, local, random_ = (int(g) for g in acts.groups())
    assert remote + local + random_ == steps and remote > 0, run.out

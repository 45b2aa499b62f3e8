"""``demo``: a short run end to end, with its own local server."""

from __future__ import annotations

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

"""The progress line: redrawn on a terminal, plain throttled lines elsewhere (a fake clock, no sleeping)."""

from __future__ import annotations

import io

import pytest

from agents_bar_stream.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(10)
def test_a_terminal_gets_one_line_redrawn_with_rate_and_eta():
    out, clock = io.StringIO(), Clock()
    progress = Progress(total=1000, label="replay", unit="transitions", stream=out, tty=True, clock=clock)
    for done in (250, 500):
        clock.now += 1.0
        progress.update(done, note="online")
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "[############............]" in last
    assert "500/1000 transitions" in last and "250/s" in last and "ETA 0:02" in last and "online" in last


@pytest.mark.timeout(10)
def test_a_pipe_gets_plain_lines_no_more_often_than_the_interval():
    out, clock = io.StringIO(), Clock()
    progress = Progress(total=10, label="demo", stream=out, tty=False, plain_interval=2.0, clock=clock)
    for done in range(1, 11):
        clock.now += 0.5
        progress.update(done)
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 3 <= len(lines) <= 5
    assert lines[-1].split()[:3] == ["demo", "10/10", "100%"]


@pytest.mark.timeout(10)
def test_message_and_open_ended_counts():
    out, clock = io.StringIO(), Clock()
    progress = Progress(stream=out, tty=True, clock=clock)
    progress.update(3, force=True)
    progress.message("the link goes down")
    clock.now = 2.0
    progress.update(7, force=True)
    progress.close()
    assert "\nthe link goes down\n" in out.getvalue().replace("\r", "\n")
    assert out.getvalue().rstrip().split("\r")[-1].split()[:2] == ["7", "3.5/s"]


@pytest.mark.parametrize("seconds, text", [(None, "--:--"), (5, "0:05"), (65.4, "1:05"), (3725, "1:02:05"),
                                           (float("inf"), "--:--")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text

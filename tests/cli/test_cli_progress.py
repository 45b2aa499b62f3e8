"""Progress: tqdm on a terminal, plain throttled lines elsewhere; and what `queue replay` shows in a log."""

from __future__ import annotations

import io
import socket
import sys

import pytest

from agents_bar_stream import Client, RemoteAgent, StreamOptions
from agents_bar_stream.progress import PlainProgress, format_duration, progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.timeout(10)
def test_a_pipe_gets_plain_lines_with_counts_rate_and_eta_no_more_often_than_the_interval():
    out, clock = io.StringIO(), Clock()
    display = PlainProgress(total=10, label="demo", unit="steps", stream=out, interval=2.0, clock=clock)
    for done in range(1, 11):
        clock.now += 0.5
        display.update(done, note="online" if done < 10 else "done")
    display.close()
    display.close()  # idempotent: no second final line
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 3 <= len(lines) <= 5
    assert lines[0].split()[:4] == ["demo", "1/10", "steps", "10%"]
    assert lines[-1].split() == ["demo", "10/10", "steps", "100%", "2.0/s", "ETA", "0:00", "done"]


@pytest.mark.timeout(10)
def test_off_a_terminal_progress_prints_plain_lines_even_with_tqdm_installed():
    pytest.importorskip("tqdm")
    out = io.StringIO()
    display = progress(total=3, label="replay x", unit="transitions", stream=out)
    assert isinstance(display, PlainProgress)
    for done in (1, 2, 3):
        display.update(done)
    display.message("the link goes down")
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:5] == ["replay", "x", "1/3", "transitions", "33%"]
    assert lines[1] == "the link goes down"
    assert lines[-1].split()[:5] == ["replay", "x", "3/3", "transitions", "100%"]


@pytest.mark.timeout(10)
def test_a_terminal_gets_tqdm_redrawing_one_line_with_the_note():
    pytest.importorskip("tqdm")
    out = Terminal()
    display = progress(total=1000, label="replay", unit="transitions", stream=out)
    assert not isinstance(display, PlainProgress)
    display.update(250, note="online")
    display.message("the link goes down")
    display.update(500, note="offline: connection refused")
    display.close()
    text = out.getvalue()
    assert text.endswith("\n") and "\r" in text
    assert "\nthe link goes down\n" in text.replace("\r", "\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("replay:") and "500/1000" in last and "offline: connection refused" in last


@pytest.mark.timeout(10)
def test_a_terminal_without_tqdm_gets_plain_lines(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` raises ImportError
    out = Terminal()
    display = progress(stream=out)
    assert isinstance(display, PlainProgress)
    display.update(7)
    display.close()
    assert out.getvalue().split()[0] == "7" and "\r" not in out.getvalue()


@pytest.mark.parametrize("seconds, text", [(None, "--:--"), (5, "0:05"), (65.4, "1:05"), (3725, "1:02:05"),
                                           (float("inf"), "--:--")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(90)
def test_replay_in_a_log_shows_plain_progress_lines_and_the_final_count(cli, creds, server, api, user, agent_name,
                                                                         tmp_path):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    queue_dir = tmp_path / "queue"
    # Queued for a server that is not there: every step stays on disk for the replay.
    client = Client(base_url=f"http://127.0.0.1:{_free_port()}", username=user[0], password=user[1])
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=str(queue_dir)))
    for i in range(30):
        agent.step([float(i), 0.5, 0.5, 0.5], i % 2, 1.0, [float(i + 1), 0.5, 0.5, 0.5], False)
    agent.close(timeout=0.2)
    client.close()

    run = cli("queue", "replay", str(queue_dir), "--url", server.url, env=creds)
    assert run.code == 0, run.err
    assert "\r" not in run.err
    assert all(line.startswith(f"replay {agent_name}  ") for line in run.err_lines), run.err
    assert run.err_lines[-1].split()[2:5] == ["30/30", "transitions", "100%"]
    assert run.out.startswith(f"delivered 30 transitions of agent {agent_name} to {server.url}")
    assert api.agent(agent_name)["steps_received"] == 30

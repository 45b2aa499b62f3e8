"""Processes that die, fork, exit or compete for a queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.stream import api_for, indices, obs_of

from agents_bar_stream import QueueLockedError

CHILD = str(Path(__file__).with_name("producer_child.py"))


def _run_and_kill(server, user, name, queue_dir, durability, run, after_steps):
    """Start a producer process, SIGKILL it once it reported ``after_steps`` steps; returns (last index
    whose step() returned, steps per second it ran at)."""
    proc = subprocess.Popen([sys.executable, CHILD, server.url, user[0], user[1], name, str(queue_dir), durability,
                             str(run), "100000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[bytes] = []
    seen = threading.Event()
    first_step_at: list[float] = []

    def read():
        for line in proc.stdout:
            lines.append(line)
            if not first_step_at and line.strip().isdigit():
                first_step_at.append(time.monotonic())
            if len(lines) > after_steps:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(60), proc.stderr.read(2000) if proc.poll() is not None else "producer too slow"
    proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait(10)
    reader.join(10)
    numbers = [int(x) for x in lines if x.strip().isdigit()]
    # The rate of the loop itself, from its first step: counting the interpreter's start-up and the
    # imports too made it several times too low, and with it the bound on what batch mode may lose.
    return numbers[-1], len(numbers) / max(killed_at - first_step_at[0], 1e-3)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("durability", ["step", "batch"])
def test_sigkill_mid_stream_loses_nothing_returned(server, user, agent_name, make_agent, tmp_path, durability):
    make_agent(server, agent_name).close()  # creates the agent on the server
    queue_dir = tmp_path / "killed-queue"
    results = {}
    for run in range(1, 4):
        results[run] = _run_and_kill(server, user, agent_name, queue_dir, durability, run, after_steps=2000 * run)
    # A later run on the same queue delivers whatever the killed ones left.
    survivor = make_agent(server, agent_name, create=False, queue_dir=queue_dir)
    assert survivor.flush(timeout=60), survivor.stats
    log = api_for(server, user).log(agent_name)
    for run, (last_returned, rate) in results.items():
        got = indices(log, run=run)
        assert got == list(range(len(got))), f"run {run}: not a gapless, duplicate-free prefix"
        if durability == "step":
            assert len(got) >= last_returned + 1, f"run {run}: a step that returned was lost"
        else:
            # What batch mode may lose: the steps of the last commit window (commit_interval, plus
            # however late the committer thread ran on a loaded machine; bounded here by 0.5 s of steps).
            assert len(got) >= last_returned + 1 - max(50, rate * 0.5), f"run {run}: lost more than the window"


@pytest.mark.timeout(60)
def test_a_second_process_on_the_same_queue_is_refused(server, user, agent_name, make_agent, tmp_path):
    queue_dir = tmp_path / "shared-queue"
    agent = make_agent(server, agent_name, queue_dir=queue_dir)
    agent.step(obs_of(0), 0, 0.0, obs_of(1), False)
    code = (
        "import sys\n"
        "from agents_bar_stream import Client, RemoteAgent, QueueLockedError\n"
        f"a = RemoteAgent(Client(base_url={server.url!r}, access_token='x'), {agent_name!r},\n"
        f"                queue_dir={str(queue_dir)!r})\n"
        "try:\n"
        "    a.step([0.0]*4, 0, 0.0, [0.0]*4, False)\n"
        "except QueueLockedError as e:\n"
        f"    sys.exit(0 if {str(queue_dir)!r} in str(e) else 3)\n"
        "sys.exit(4)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert agent.flush(timeout=30)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_gets_no_flusher_and_no_lock(server, user, agent_name, make_agent):
    agent = make_agent(server, agent_name)
    agent.step(obs_of(0), 0, 0.0, obs_of(1), False)  # the flusher and the queue lock now exist
    assert any(t.name.startswith("agents-bar-stream-flusher") for t in threading.enumerate())
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only, and never run pytest's teardown
        code = 0
        try:
            if any(t.name.startswith("agents-bar-stream-") for t in threading.enumerate()):
                code = 10  # inherited a worker thread
            elif not isinstance(agent.act(obs_of(0), timeout=10), int):
                code = 11  # the child could not use the agent's connection
            else:
                try:
                    agent.step(obs_of(1), 0, 0.0, obs_of(2), False)
                    code = 12  # it took the parent's queue
                except QueueLockedError:
                    code = 0
        except BaseException:  # noqa: BLE001
            code = 13
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(1, 100):  # the parent goes on as if nothing happened
        agent.step(obs_of(i), 0, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=30)
    assert indices(api_for(server, user).log(agent_name)) == list(range(100))


@pytest.mark.timeout(60)
def test_exit_with_the_server_down_is_bounded_and_keeps_the_queue(
    server_factory, user, agent_name, tmp_path, make_agent
):
    srv = server_factory()
    make_agent(srv, agent_name).close()
    url = srv.url
    srv.stop(timeout=30)
    queue_dir = tmp_path / "exit-queue"
    code = (
        "from agents_bar_stream import Client, RemoteAgent\n"
        f"a = RemoteAgent(Client(base_url={url!r}, username={user[0]!r}, password={user[1]!r}), {agent_name!r},"
        f" queue_dir={str(queue_dir)!r}, close_timeout=1.0)\n"
        "for i in range(1000):\n"
        "    a.step([float(i), 0.0, 0.0, 0.0], 0, 0.0, [0.0]*4, False)\n"
        "print('queued', a.pending)\n"  # no close(): the atexit hook must deal with it
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], timeout=50, capture_output=True)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert took < 30, f"exit took {took:.1f} s"  # close_timeout 1 s plus interpreter start; never minutes
    srv.start(timeout=60)
    agent = make_agent(srv, agent_name, create=False, queue_dir=queue_dir)
    assert agent.flush(timeout=30)
    assert indices(api_for(srv, user).log(agent_name)) == list(range(1000))

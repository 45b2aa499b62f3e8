"""Workers (issue 15): N processes on one agent, none given a queue_dir, each get a worker queue of their
own (with its own producer id); two are SIGKILLed and restarted, and the restarted ones take the queues
the dead ones left and deliver their steps. Every step that returned is delivered, exactly once.

All real: a server process, worker processes, queues on disk; the only fault is the SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest
from support.api import wait_for
from support.stream import api_for

from agents_bar_stream.storage import read_queue_summary

CHILD = Path(__file__).with_name("worker_child.py")


class Worker:
    """A worker process and what it reported (read by a thread: its stdout must never fill up)."""

    def __init__(self, server, user, name, tag, run, limit, env) -> None:
        self.tag, self.run = tag, run
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), server.url, user[0], user[1], name, str(tag), str(run), str(limit)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().strip())

    @property
    def ready(self) -> list | None:
        return next((ln.split()[1:] for ln in self.lines if ln.startswith("ready")), None)

    @property
    def last_step(self) -> int:
        numbers = [int(ln) for ln in self.lines if ln.isdigit()]
        return numbers[-1] if numbers else -1

    def has(self, word: str) -> bool:
        return any(ln.startswith(word) for ln in self.lines)

    def stop(self) -> None:
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)


@pytest.mark.timeout(240)
def test_four_workers_two_killed_and_restarted_deliver_every_step_once(server, user, agent_name, tmp_path):
    api = api_for(server, user)
    api.create_agent(agent_name)
    root = tmp_path / "queues"
    env = {**os.environ, "AGENTS_BAR_STREAM_QUEUE_ROOT": str(root), "PYTHONPATH": os.pathsep.join(sys.path)}
    # Workers 2 and 3 hold their steps back (a short batch lingers up to an hour): when they are killed
    # their queues are full, and only the restarted workers can deliver those steps.
    holding = {**env, "AGENTS_BAR_STREAM_FLUSH_INTERVAL": "1h"}
    workers = [Worker(server, user, agent_name, tag, 0, 600, holding if tag >= 2 else env) for tag in range(4)]
    try:
        wait_for(lambda: all(w.ready for w in workers), 60, message="4 workers ready")
        dirs = {w.ready[0] for w in workers}
        producers = {w.ready[1] for w in workers}
        assert len(dirs) == 4 and len(producers) == 4  # a queue and a producer id each, nothing given by hand
        assert all(Path(d).parent == root for d in dirs)

        # Kill two in the middle of their loops, then start two new workers.
        wait_for(lambda: all(w.last_step >= 100 for w in workers[2:]), 60, message="workers 2 and 3 stepping")
        for w in workers[2:]:
            w.kill()
        killed = {w.ready[0]: w for w in workers[2:]}
        left = {d: read_queue_summary(d)["pending"] for d in killed}
        assert all(n >= 100 for n in left.values()), left
        restarted = [Worker(server, user, agent_name, tag, 1, 200, env) for tag in (2, 3)]
        workers += restarted
        wait_for(lambda: all(w.ready for w in restarted), 60, message="2 restarted workers ready")
        # The live workers still hold their queues: the restarted ones take those the dead ones left.
        assert {w.ready[0] for w in restarted} == set(killed)
        for w in restarted:
            assert w.ready[1] == killed[w.ready[0]].ready[1]  # the dead worker's producer id, and its steps

        live = [w for w in workers if w.proc.poll() is None]
        wait_for(lambda: all(w.has("stepped") for w in live), 120, message="every worker done stepping")
        for w in live:
            w.stop()
        wait_for(lambda: all(w.has("done") for w in live), 120, message="every worker closed")
        assert all(w.lines[-1] == "done 0" for w in live), [w.lines[-1] for w in live]
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(timeout=30)

    log = api.log(agent_name)
    got: dict[tuple[int, int], list[int]] = defaultdict(list)
    for entry in log:
        obs = entry["step"]["obs"]
        got[(int(obs[1]), int(obs[2]))].append(int(obs[0]))
    for w in workers:
        seen = got[(w.tag, w.run)]
        if w.proc.returncode == -signal.SIGKILL:
            # Every step whose step() returned was on disk, so it is delivered; at most one more
            # (killed between step() and its report); none twice.
            assert seen[: w.last_step + 1] == list(range(w.last_step + 1)), (w.tag, w.run)
            assert len(seen) <= w.last_step + 2
        else:
            assert seen == list(range(int(w.proc.args[-1]))), (w.tag, w.run)
    for d in root.iterdir():
        assert read_queue_summary(d)["pending"] == 0, d
    api.cleanup()

"""``queue replay --all`` and ``queue gc`` (issue 15), run as a user would (a subprocess), on queues made
by real RemoteAgents for a real server."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from support.api import Api, login, wait_for

from agents_bar_stream import Client, RemoteAgent, StreamOptions
from agents_bar_stream.storage import read_queue_summary


def _steps(agent: RemoteAgent, count: int) -> None:
    for i in range(count):
        agent.step([float(i), 0.5, 0.5, 0.5], i % 2, 1.0, [float(i + 1), 0.5, 0.5, 0.5], False)


def _age(path: Path, days: float) -> None:
    """Make everything in ``path`` look untouched for ``days``."""
    when = time.time() - days * 86400
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            os.utime(os.path.join(root, name), (when, when))
    os.utime(path, (when, when))


@pytest.mark.timeout(180)
def test_replay_all_delivers_every_queue_but_set_aside_and_busy_ones(cli, creds, user, server_factory, tmp_path,
                                                                      agent_name):
    srv = server_factory()
    root = tmp_path / "queue-root"  # the cli fixture's queue root
    client = Client(base_url=srv.url, username=user[0], password=user[1])
    names = [f"{agent_name}-{k}" for k in range(4)]
    agents = []
    for k, name in enumerate(names[:3]):
        agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=root / f"q{k}"))
        agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
        agents.append(agent)
    # q3 stays open in this process for the whole command: its RemoteAgent talks to an address where
    # nothing listens, so that its steps stay queued (pending, and locked) whatever the timing.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", access_token="t")
    agents.append(RemoteAgent(nowhere, names[3], stream=StreamOptions(queue_dir=root / "q3")))
    srv.stop()
    for k, agent in enumerate(agents):
        _steps(agent, 10 + k)
    for agent in agents[:3]:
        agent.close(timeout=0.2)  # the server is down: the steps stay on disk
    # q2 looks set aside by remove() (its agent deleted): its steps must never be sent.
    os.rename(root / "q2", root / "q2.removed-20260101T000000-x")
    srv.start()
    # q3 is still open here (agents[3] holds it): skipped, not fought over.
    run = cli("queue", "replay", "--all", env={**creds, "AGENTS_BAR_URL": srv.url}, timeout=120)
    assert run.code == 0, (run.out, run.err)
    assert "replayed 2 of 2 queues" in run.out
    assert "skipping" in run.out and "q3" in run.out
    api = Api(srv.url, login(srv.url, *user))
    assert [len(api.log(n)) for n in names[:3]] == [10, 11, 0]
    assert read_queue_summary(root / "q0")["pending"] == read_queue_summary(root / "q1")["pending"] == 0
    assert read_queue_summary(root / "q2.removed-20260101T000000-x")["pending"] == 12
    agents[3].close(timeout=0)
    wait_for(lambda: cli("queue", "purge", str(root / "q3"), "--yes").code == 0, 30, message="q3 purged")
    # Nothing left to do: says so.
    run = cli("queue", "replay", "--all", env=creds)
    assert run.code == 0 and "no queue under" in run.out
    usage = cli("queue", "replay", env=creds)
    assert usage.code != 0 and "QUEUE_DIR or --all" in usage.err


@pytest.mark.timeout(180)
def test_gc_is_a_dry_run_unless_told_and_takes_only_old_empty_or_orphaned_queues(cli, user, server, tmp_path,
                                                                                  agent_name):
    root = tmp_path / "queue-root"
    client = Client(base_url=server.url, username=user[0], password=user[1])
    api = Api(server.url, login(server.url, *user))
    api.create_agent(agent_name)
    # empty: delivered everything
    with RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=root / "empty")) as agent:
        _steps(agent, 3)
        assert agent.flush(timeout=30)
    # pending: steps for a service that is not there, left on disk at close
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", access_token="t")
    held = RemoteAgent(nowhere, agent_name, stream=StreamOptions(queue_dir=root / "pending"))
    _steps(held, 3)
    held.close(timeout=0)
    # orphaned: set aside when its agent was deleted; and a directory that holds no queue
    gone = RemoteAgent(nowhere, agent_name, stream=StreamOptions(queue_dir=root / "gone"))
    _steps(gone, 2)
    gone.close(timeout=0)
    os.rename(root / "gone", root / "gone.removed-20260101T000000-x")
    (root / "not-a-queue").mkdir()
    (root / "not-a-queue" / "lock").write_text("")
    for name in ("empty", "pending", "gone.removed-20260101T000000-x", "not-a-queue"):
        _age(root / name, 8)
    # recent and empty: kept for now
    with RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=root / "recent")) as agent:
        _steps(agent, 2)
        assert agent.flush(timeout=30)
    # in use (old but locked by a live agent here): never touched
    busy = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=root / "busy"))
    _steps(busy, 1)
    assert busy.flush(timeout=30)
    _age(root / "busy", 8)
    try:
        before = sorted(p.name for p in root.iterdir())
        for args in ((), ("--dry-run",)):
            run = cli("queue", "gc", "--older-than", "7d", *args)
            assert run.code == 0, run.err
            assert "dry run: nothing deleted" in run.out
            assert sorted(p.name for p in root.iterdir()) == before
        listed = run.out
        for name in ("empty", "gone.removed", "not-a-queue"):
            assert name in listed
        for name in ("pending", "recent", "busy"):
            assert f"{root / name}" not in listed
        assert cli("queue", "gc", "--older-than", "9d").out.startswith("no empty or orphaned queue")

        run = cli("queue", "gc", "--older-than", "7d", "--delete")
        assert run.code == 0, run.err
        assert "deleted 3 of 3 queues" in run.out
        assert sorted(p.name for p in root.iterdir()) == ["busy", "pending", "recent"]
        assert read_queue_summary(root / "pending")["pending"] == 3
        bad = cli("queue", "gc", "--older-than", "a while")
        assert bad.code == 2 and "not a duration" in bad.err
    finally:
        busy.close(timeout=5)
        api.cleanup()

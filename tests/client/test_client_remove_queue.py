"""remove() and the agent's local queues (issue 15): an empty queue is deleted, worker queues too; one
that still holds steps is set aside, and stats["queue_removed"] says which, with how many steps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.api import wait_for

from agents_bar_stream import RemoteAgent, StreamOptions


def _steps(agent: RemoteAgent, n: int) -> None:
    for i in range(n):
        agent.step([float(i), 0.0, 0.0, 0.0], 1, 1.0, [0.0, 0.0, 0.0, float(i)], False)


@pytest.mark.timeout(60)
def test_remove_keeps_a_queue_with_a_dead_letter_and_says_so(client, agent_name, tmp_path, caplog):
    queue_dir = tmp_path / "q"
    RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path / "other")).create_agent(4, 2, "dqn")
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=queue_dir))
    assert agent.stats["queue_removed"] is None
    # A step the agent refuses (the wrong observation size; this RemoteAgent did not know the agent's
    # when it was queued): a dead letter, which the queue keeps for a person to look at.
    agent.step([0.0, 0.0, 0.0], 1, 1.0, [0.0, 0.0, 0.0], False)
    wait_for(lambda: agent.stats["dead_lettered"] == 1, 30, message="the dead letter")
    with caplog.at_level(logging.WARNING, logger="agents_bar_stream.client"):
        assert agent.remove(agent_name=agent_name)
    report = agent.stats["queue_removed"]
    assert report["deleted"] == [] and report["in_use"] == []
    (kept,) = report["kept"]
    assert kept["pending"] == 0 and kept["dead_letters"] == 1
    assert Path(kept["queue_dir"]).is_dir() and not queue_dir.exists()
    assert any("1 dead letters" in r.getMessage() and kept["queue_dir"] in r.getMessage() for r in caplog.records)
    agent.close(timeout=0)


@pytest.mark.timeout(60)
def test_remove_deletes_the_empty_worker_queues(client, agent_name, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTS_BAR_STREAM_QUEUE_ROOT", str(tmp_path / "root"))
    first = RemoteAgent(client, agent_name)
    first.create_agent(4, 2, "dqn")
    second = RemoteAgent(client, agent_name)  # the same agent, no queue_dir: a worker queue of its own
    _steps(first, 3)
    _steps(second, 3)
    assert first.flush(timeout=30) and second.flush(timeout=30)
    dirs = {first.stats["queue_dir"], second.stats["queue_dir"]}
    assert len(dirs) == 2 and {Path(d).parent for d in dirs} == {tmp_path / "root"}
    assert first.stats["producer_id"] != second.stats["producer_id"]
    second.close(timeout=5)
    assert first.remove(agent_name=agent_name)
    report = first.stats["queue_removed"]
    assert sorted(report["deleted"]) == sorted(dirs) and report["kept"] == []
    assert not any(Path(d).exists() for d in dirs)
    first.close(timeout=0)

"""The protocol's error answers as the flusher meets them: 422 dead letters, 413 splits."""

from __future__ import annotations

import pytest
from support.stream import api_for, indices, obs_of

from agents_bar_stream.storage import DiskQueue, read_queue_summary


@pytest.mark.timeout(60)
def test_422_dead_letters_only_the_bad_step(server, user, agent_name, make_agent, tmp_path):
    # The server's agent has 2 actions; this client was never told, so action 5 passes step()'s
    # checks and only the server can refuse it.
    queue_dir = tmp_path / "dl-queue"
    agent = make_agent(server, agent_name, queue_dir=queue_dir)
    bad = {10, 250}
    for i in range(400):
        agent.step(obs_of(i), 5 if i in bad else i % 2, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=30), agent.stats
    assert indices(api_for(server, user).log(agent_name)) == [i for i in range(400) if i not in bad]
    assert agent.stats["dead_lettered"] == 2
    agent.close()
    assert read_queue_summary(queue_dir)["dead_letters"] == 2  # kept on disk for a person to look at
    reader = DiskQueue(queue_dir, lock=False)  # as `agents-bar-stream queue` reads it
    try:
        records = reader.dead_letter_records()
    finally:
        reader.close()
    assert [int(r["step"]["obs"][0]) for r in records] == sorted(bad)
    assert all(r["status"] == 422 and "action" in r["detail"] for r in records)


@pytest.mark.timeout(90)
def test_413_splits_batches_until_they_fit(server_factory, user, agent_name, make_agent):
    srv = server_factory()
    agent = make_agent(srv, agent_name, batch_size=2000)
    agent.step(obs_of(0), 0, 0.0, obs_of(1), False)
    assert agent.flush(timeout=30)  # the client has now read the server's (large) limits
    srv.stop(timeout=30)
    srv.extra_args = ["--max-batch-bytes", "4000"]  # the same server comes back with a small limit
    for i in range(1, 3001):
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    srv.start(timeout=60)
    assert agent.flush(timeout=60), agent.stats
    assert indices(api_for(srv, user).log(agent_name)) == list(range(3001))
    assert agent.stats["dead_lettered"] == 0


@pytest.mark.timeout(90)
def test_an_old_server_gets_the_steps_one_by_one_in_order(server_factory, user, agent_name, make_agent):
    srv = server_factory(extra_args=["--part1-only"])
    assert api_for(srv, user).get("/stream/info").status_code == 404
    agent = make_agent(srv, agent_name)
    for i in range(200):
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=60), agent.stats
    assert agent.stats["mode"] == "legacy"
    info = api_for(srv, user).agent(agent_name)
    assert info["steps_received"] == 200
    # /step keeps no producer numbers, but the server's log still shows the order of arrival.
    assert indices(api_for(srv, user).log(agent_name)) == list(range(200))

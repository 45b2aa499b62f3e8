"""``queue status|replay|dead-letters|purge`` on queues made by a real RemoteAgent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from support.api import Api, login, wait_for

from agents_bar_stream import Client, RemoteAgent, StreamOptions
from agents_bar_stream.flaky import FlakyProxy

STEPS = 40


def _steps(agent: RemoteAgent, count: int, *, obs_size: int = 4) -> None:
    for i in range(count):
        obs = [float(i)] + [0.5] * (obs_size - 1)
        agent.step(obs, i % 2, 1.0, [float(i + 1)] + [0.5] * (obs_size - 1), i % 10 == 9)


@pytest.fixture
def stopped_server_queue(server_factory, user, agent_name, tmp_path):
    """``(server, queue_dir)``: a private server, stopped, and a queue holding STEPS steps for it."""
    srv = server_factory()
    queue_dir = tmp_path / "queue"
    client = Client(base_url=srv.url, username=user[0], password=user[1])
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=str(queue_dir)))
    agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
    srv.stop()
    _steps(agent, STEPS)
    agent.close(timeout=0.2)  # the server is down: everything stays on disk
    client.close()
    return srv, queue_dir


def _status(cli, *args: str) -> list:
    run = cli("queue", "status", "--json", *args)
    assert run.code == 0, run.err
    return json.loads(run.out)


@pytest.mark.timeout(120)
def test_status_replay_and_purge_of_a_queue_left_by_an_outage(cli, creds, user, agent_name, stopped_server_queue,
                                                               one_line_error):
    srv, queue_dir = stopped_server_queue

    (summary,) = _status(cli, str(queue_dir))
    assert summary["agent"] == agent_name
    assert summary["service_url"] == srv.url
    assert summary["pending"] == STEPS
    assert summary["producer_id"]
    assert summary["bytes_on_disk"] > 0
    assert summary["oldest_pending_age"] >= 0
    assert summary["dead_letters"] == 0
    assert summary["locked_by_pid"] is None

    table = cli("queue", "status", str(queue_dir))
    assert table.code == 0, table.err
    header, row = table.out.splitlines()
    assert header.split()[:4] == ["AGENT", "SERVICE", "PRODUCER", "PENDING"]
    assert row.split()[:4] == [agent_name, srv.url, summary["producer_id"], str(STEPS)]

    # The server is still down: replay says so in one line, and keeps the queue.
    one_line_error(cli("queue", "replay", str(queue_dir), env=creds), 1, "cannot reach the server", srv.url)
    assert _status(cli, str(queue_dir))[0]["pending"] == STEPS

    srv.start(timeout=120)  # same port, same data
    run = cli("queue", "replay", str(queue_dir), "--username", user[0], "--password", user[1], "--timeout", "60")
    assert run.code == 0, run.err
    assert f"delivered {STEPS} transitions" in run.out
    assert _status(cli, str(queue_dir))[0]["pending"] == 0
    api = Api(srv.url, login(srv.url, *user))
    assert api.agent(agent_name)["steps_received"] == STEPS
    assert len(api.log(agent_name)) == STEPS

    # Replaying an empty queue is fine, and sends nothing again.
    again = cli("queue", "replay", str(queue_dir), env=creds)
    assert again.code == 0, again.err
    assert api.agent(agent_name)["steps_received"] == STEPS

    refused = cli("queue", "purge", str(queue_dir))
    one_line_error(refused, 2, "--yes")
    assert queue_dir.is_dir()
    purged = cli("queue", "purge", str(queue_dir), "--yes")
    assert purged.code == 0, purged.err
    assert not queue_dir.exists()


@pytest.mark.timeout(60)
def test_status_lists_every_queue_under_the_root_and_shows_the_lock(cli, server, user, agent_name, tmp_path,
                                                                   one_line_error):
    root = tmp_path / "queue-root"  # the cli fixture's $AGENTS_BAR_STREAM_QUEUE_ROOT
    assert cli("queue", "status").out.startswith("no queues under")
    assert _status(cli) == []

    client = Client(base_url=server.url, username=user[0], password=user[1])
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=str(root / "one")))
    agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
    _steps(agent, 5)
    try:
        (summary,) = _status(cli)
        assert summary["agent"] == agent_name
        assert summary["locked_by_pid"] is not None  # this test process holds it
        one_line_error(cli("queue", "purge", str(root / "one"), "--yes"), 1, "in use by another process")
        one_line_error(cli("queue", "replay", str(root / "one"), env={"AGENTS_BAR_USERNAME": user[0],
                                                                      "AGENTS_BAR_PASSWORD": user[1]}),
                       1, "in use by another process")
        assert agent.flush(timeout=30)
    finally:
        agent.close()
        client.close()
    (summary,) = _status(cli)
    assert summary["locked_by_pid"] is None and summary["pending"] == 0


@pytest.mark.timeout(60)
def test_commands_on_something_that_is_not_a_queue(cli, tmp_path, one_line_error):
    (tmp_path / "plain").mkdir()
    for args in (["status", str(tmp_path / "missing")], ["replay", str(tmp_path / "plain")],
                 ["dead-letters", str(tmp_path / "plain")], ["purge", str(tmp_path / "plain"), "--yes"]):
        one_line_error(cli("queue", *args), 1, "queue directory")
    assert (tmp_path / "plain").is_dir() and not (tmp_path / "missing").exists()


@pytest.mark.timeout(240)
def test_dead_letters_list_export_and_requeue(cli, creds, server, api, user, agent_name, tmp_path, one_line_error):
    api.create_agent(agent_name, "dqn", obs_size=4, action_size=2)
    queue_dir = tmp_path / "queue"
    client = Client(base_url=server.url, username=user[0], password=user[1])
    # No create through this agent, so it knows neither the model nor the sizes: the 3-number
    # observations pass the local checks and the server refuses them (422). (The flusher reads the
    # agent's sizes before its first request, after which step() would refuse such a step itself:
    # flush_interval=1 keeps it from starting before all three are queued.)
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=str(queue_dir), flush_interval=1.0))
    _steps(agent, 3, obs_size=3)
    try:
        wait_for(lambda: agent.stats["dead_lettered"] == 3, timeout=30, message="three dead letters")
    finally:
        agent.close(timeout=5)
        client.close()

    listing = cli("queue", "dead-letters", str(queue_dir))
    assert listing.code == 0, listing.err
    lines = listing.out.splitlines()
    assert lines[0].split()[:2] == ["SEQ", "STATUS"]
    assert [line.split()[:2] for line in lines[1:]] == [["0", "422"], ["1", "422"], ["2", "422"]]
    assert "invalid" in lines[1]

    export = tmp_path / "dead.jsonl"
    exported = cli("queue", "dead-letters", str(queue_dir), "--export", str(export))
    assert exported.code == 0, exported.err
    records = [json.loads(line) for line in export.read_text().splitlines()]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert all(r["status"] == 422 and len(r["step"]["obs"]) == 3 for r in records)
    assert [r["step"]["obs"][0] for r in records] == [0.0, 1.0, 2.0]

    # Requeued to an agent that still refuses them: they are dead letters again, once each.
    # --timeout well above the few ms this takes: on a loaded machine a retry's backoff once made 20 s
    # too short, and the command counted the refusals so far as if they were all.
    refused = cli("queue", "dead-letters", str(queue_dir), "--requeue", "--timeout", "60", env=creds, timeout=90)
    one_line_error(refused, 1, "refused 3 again")
    again = cli("queue", "dead-letters", str(queue_dir), "--export", "-")
    assert [json.loads(line)["step"]["obs"][0] for line in again.out.splitlines()] == [0.0, 1.0, 2.0]

    # Fix the agent (observations of 3 numbers), then requeue: delivered, and the store is empty.
    assert api.delete(f"/agents/{agent_name}").status_code == 202
    api.create_agent(agent_name, "dqn", obs_size=3, action_size=2)
    requeued = cli("queue", "dead-letters", str(queue_dir), "--requeue", env=creds)
    assert requeued.code == 0, requeued.err
    assert "requeued 3 dead letters" in requeued.out
    (summary,) = _status(cli, str(queue_dir))
    assert summary["dead_letters"] == 0 and summary["pending"] == 0
    assert [entry["step"]["obs"][0] for entry in api.log(agent_name)] == [0.0, 1.0, 2.0]
    assert list(queue_dir.glob("requeue-*.jsonl")) == []
    assert cli("queue", "dead-letters", str(queue_dir)).out.startswith("no dead letters")


@pytest.mark.timeout(90)
def test_replay_is_safe_to_interrupt_and_run_again(cli, creds, user, agent_name, stopped_server_queue, tmp_path):
    srv, queue_dir = stopped_server_queue
    srv.start(timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_BAR")}
    env.update(creds)
    # A slow link (every round trip over a second), so that Ctrl-C lands before the delivery.
    with FlakyProxy(srv.url, latency=0.6) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "agents_bar_stream", "queue", "replay", str(queue_dir),
                                 "--url", proxy.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            first = proc.stderr.readline()  # the first progress line: the queue is open
            assert first.startswith(f"replay {agent_name}"), first
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    assert "interrupted" in err and "run the same command again" in err

    again = cli("queue", "replay", str(queue_dir), env=creds)
    assert again.code == 0, again.err
    api = Api(srv.url, login(srv.url, *user))
    assert api.agent(agent_name)["steps_received"] == STEPS
    assert len(api.log(agent_name)) == STEPS

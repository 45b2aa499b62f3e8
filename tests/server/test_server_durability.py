"""Restarts and crashes: what a 200 promised must still be there, exactly once, in order."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from support.api import Api, login, make_step, make_steps, wait_for

pytestmark = pytest.mark.timeout(180)


def test_graceful_restart_keeps_everything(server_factory, user):
    server = server_factory(extra_args=["--save-interval", "1"])
    token = login(server.url, *user)
    api = Api(server.url, token)
    api.create_agent("keeper", "dqn", obs_size=4, action_size=2, batch_size=16)
    api.create_agent("idle", "ppo", obs_size=3, action_size=1)
    for first in range(0, 3000, 500):
        assert api.send_steps("keeper", "prod-a", first, make_steps(first, 500)).status_code == 200
    api.send_steps("keeper", "prod-b", 0, make_steps(0, 7))
    api.post("/agents/keeper/step", json={"step_data": make_step(99)})
    wait_for(lambda: api.agent("keeper")["steps_learned"] > 0, 60, message="the learner to start")
    log_before = api.log("keeper")
    learned_before = api.agent("keeper")["steps_learned"]
    port = server.port

    assert server.stop(timeout=60) == 0  # SIGTERM: graceful, exit status 0
    weights = list((server.data_dir / "weights").glob("agent-*.pt"))
    assert len(weights) == 2, "weights are saved on shutdown"
    server.start(timeout=120)
    assert server.port == port, "a restart keeps the port"

    api = Api(server.url, token)  # tokens signed before the restart stay valid
    info = api.agent("keeper")
    assert info["steps_received"] == 3008
    # Agents load beside serving after a restart; once loaded, the cursor is the saved one (a
    # learner starting over from 0 would first show a smaller number).
    learned = wait_for(lambda: api.agent("keeper")["steps_learned"], 60, message="the learner cursor restored")
    assert learned >= learned_before, "the learner cursor is restored with the weights"
    assert api.get("/agents/keeper/producers/prod-a").json() == {"acked_seq": 2999}
    assert api.get("/agents/keeper/producers/prod-b").json() == {"acked_seq": 6}
    assert api.log("keeper") == log_before
    assert {a["name"] for a in api.get("/agents/").json()} == {"keeper", "idle"}
    # The next batch continues the sequence; a resend of an old one is all duplicates.
    assert api.send_steps("keeper", "prod-a", 3000, make_steps(3000, 2)).json() == {
        "acked_seq": 3001,
        "applied": 2,
        "duplicates": 0,
    }
    assert api.send_steps("keeper", "prod-a", 2500, make_steps(2500, 500)).json()["duplicates"] == 500
    assert api.post("/agents/idle/act", json=[0.0, 0.0, 0.0]).status_code == 200


def test_kill_9_during_a_stream_loses_no_answered_batch(server_factory, user):
    server = server_factory()
    token = login(server.url, *user)
    api = Api(server.url, token)
    api.create_agent("crashy", "dqn", obs_size=4, action_size=2)

    batch = 200
    answered = []  # (first_seq, response) of every batch the server answered 200
    unanswered = []  # first_seq of the batch in flight when the connection broke
    stop = threading.Event()

    def stream() -> None:
        session = Api(server.url, token, timeout=10)
        first = 0
        while not stop.is_set():
            try:
                resp = session.send_steps("crashy", "stream-1", first, make_steps(first, batch))
            except requests.RequestException:
                unanswered.append(first)
                return
            assert resp.status_code == 200, resp.text
            answered.append((first, resp.json()))
            first += batch

    thread = threading.Thread(target=stream, name="stream", daemon=True)
    thread.start()
    wait_for(lambda: len(answered) >= 15, 60, interval=0.01, message="batches to be answered")
    server.kill()  # SIGKILL mid-stream: no shutdown code runs
    thread.join(30)
    stop.set()
    assert not thread.is_alive()
    assert unanswered, "the stream should have been cut by the kill"

    server.start(timeout=120)
    api = Api(server.url, token)
    last_answered = answered[-1][0] + batch - 1
    assert answered[-1][1]["acked_seq"] == last_answered
    acked = api.get("/agents/crashy/producers/stream-1").json()["acked_seq"]
    # Every answered batch is there; the one in flight may or may not be (it was never answered).
    assert acked in (last_answered, last_answered + batch)
    log = api.log("crashy")
    assert [e["seq"] for e in log] == list(range(acked + 1)), "each step exactly once, in order"
    assert [e["step"] for e in log] == make_steps(0, acked + 1)
    assert api.agent("crashy")["steps_received"] == acked + 1

    # The client resends what it did not see answered: duplicates are counted, not applied.
    first = unanswered[0]
    resp = api.send_steps("crashy", "stream-1", first, make_steps(first, batch))
    assert resp.status_code == 200
    body = resp.json()
    assert body["acked_seq"] == first + batch - 1
    assert body["applied"] + body["duplicates"] == batch
    assert [e["seq"] for e in api.log("crashy")] == list(range(first + batch))


def test_restart_after_kill_on_same_port_and_token_expiry(server_factory, user):
    ttl = 4.0
    server = server_factory(extra_args=["--token-ttl", str(ttl)])
    port = server.port
    issued = time.monotonic()
    token = login(server.url, *user)
    api = Api(server.url, token)
    assert api.get("/agents/").status_code == 200
    server.restart(kill=True)
    assert server.port == port
    if time.monotonic() - issued < ttl - 1.5:  # (expiry is whole seconds: the token may live ttl - 1 s)
        assert api.get("/agents/").status_code == 200, "tokens stay valid across a restart"
    time.sleep(max(0.0, ttl + 0.2 - (time.monotonic() - issued)))
    resp = api.get("/agents/")
    assert resp.status_code == 401, "the token should have expired"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer") and "expired" in resp.json()["detail"]
    assert Api(server.url, login(server.url, *user)).get("/agents/").status_code == 200

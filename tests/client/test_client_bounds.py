"""Bounds of the client: act() not held by another thread's login, the state after close(), agent
names, and step() refusing what it cannot send (learning nothing from it).

The only fakes are network faults: a FlakyProxy in front of the real server, or a port nobody
listens on (``closed_port_url`` from tests/client/conftest.py).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from support.api import wait_for

from agents_bar_stream import (
    Client,
    ClosedError,
    ConfigurationError,
    InvalidStepError,
    RemoteAgent,
)
from agents_bar_stream.config import ENV_QUEUE_ROOT, StreamOptions
from agents_bar_stream.flaky import FlakyProxy

_STREAM_FIELDS = {f.name for f in dataclasses.fields(StreamOptions)}
MARGIN = 1.5  # seconds a deadline may be overrun by scheduling on a loaded 2-core machine
OBS = [0.1, -0.2, 0.3, 0.0]
NEXT = [0.2, -0.1, 0.4, 0.1]


@pytest.fixture
def offline(closed_port_url, tmp_path):
    """``make(name="offline", **options) -> RemoteAgent`` on a port nobody listens on, its queue in
    tmp_path; every agent made is closed at teardown."""
    made = []

    def make(name: str = "offline", **options) -> RemoteAgent:
        stream = {k: options.pop(k) for k in list(options) if k in _STREAM_FIELDS}
        stream.setdefault("queue_dir", tmp_path / f"queue-{len(made)}")
        agent = RemoteAgent(Client(base_url=closed_port_url, access_token="t"), name, stream=StreamOptions(**stream),
                            **options)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close(timeout=0)


# --- 6. act() and another thread's login -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_act_is_not_held_up_by_another_threads_login(server, user, agent_name, tmp_path):
    # Fault: FlakyProxy holds every new connection for 8 s, so the first login hangs there.
    with FlakyProxy(upstream=server.url, seed=5, stall_prob=1.0, stall_seconds=8) as proxy:
        client = Client(base_url=proxy.url, username=user[0], password=user[1])  # no token yet
        agent = RemoteAgent(client, agent_name, agent_model="dqn", obs_size=4, action_size=2,
                            fallback=lambda obs: 1, stream=StreamOptions(queue_dir=tmp_path / "queue"))
        errors: list = []

        def other_thread() -> None:
            try:
                agent.info()  # logs in first, holding the login lock while the proxy stalls
            except Exception as exc:  # noqa: BLE001 - whatever it ends with, it is not what is tested
                errors.append(exc)

        thread = threading.Thread(target=other_thread, daemon=True)
        thread.start()
        try:
            wait_for(lambda: proxy.stats["stalls"] >= 1, 10, interval=0.02, message="the login inside the proxy")
            time.sleep(0.1)
            started = time.monotonic()
            action = agent.act(OBS, timeout=0.5)
            elapsed = time.monotonic() - started
        finally:
            proxy.stop()
            thread.join(15)
            agent.close(timeout=0)
            client.close()
    assert action == 1
    assert elapsed < 0.5 + MARGIN, f"act(timeout=0.5) took {elapsed:.1f} s"
    assert agent.stats["act_fallbacks"] == 1


# --- 7. after close() ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_flush_after_close_raises_and_pending_tells_what_stayed_on_disk(offline, tmp_path):
    queue = tmp_path / "queue-after-close"
    agent = offline(queue_dir=queue)
    for i in range(5):
        agent.step(OBS, i % 2, 0.0, NEXT, False)
    assert agent.pending == 5
    agent.close(timeout=0.2)
    assert agent.pending == 5  # left on disk, not "nothing pending"
    with pytest.raises(ClosedError):
        agent.flush()
    with pytest.raises(ClosedError):
        agent.flush(timeout=1)
    # They really are on disk: the next agent on that queue finds them.
    assert offline(queue_dir=queue).pending == 5


# --- 8. agent names ------------------------------------------------------------------------------------

BAD_NAMES = ["a/../../x", "a?b", "../up", "", "x" * 200, "a#b", "a b", "a..b", "-x", "a/b", "a%2Fb"]


@pytest.mark.timeout(30)
def test_names_read_as_a_path_or_a_query_are_refused(closed_port_url, tmp_path, monkeypatch):
    root = tmp_path / "root" / "queues"
    monkeypatch.setenv(ENV_QUEUE_ROOT, str(root))
    client = Client(base_url=closed_port_url, access_token="t")
    accepted = []
    for name in BAD_NAMES:
        try:
            agent = RemoteAgent(client, name)
        except ConfigurationError as exc:
            assert isinstance(exc, ValueError)
        else:
            accepted.append(name)
            agent.close(timeout=0)
    assert accepted == [], "names taken that could be read as a path or a query"
    assert list(tmp_path.rglob("*")) == [], "a directory was created"
    # A good name still works, and its queue is one directory under the root.
    agent = RemoteAgent(client, "good-name.1_x")
    try:
        agent.step(OBS, 0, 0.0, NEXT, False)
        queues = list(root.iterdir())
        assert len(queues) == 1 and (queues[0] / "data").is_dir(), queues
    finally:
        agent.close(timeout=0)


# --- 9. step() learns nothing from a refused transition -----------------------------------------------------


@pytest.mark.timeout(30)
def test_a_refused_continuous_step_teaches_nothing(offline):
    agent = offline()
    with pytest.raises(InvalidStepError):
        agent.step(OBS, [0.1, 0.2], float("nan"), NEXT, False)
    assert agent.pending == 0
    assert agent.step(OBS, [0.1, 0.2, 0.3], 1.0, NEXT, False) is True  # not held to 2 numbers
    assert agent.pending == 1


@pytest.mark.timeout(30)
def test_a_refused_discrete_step_teaches_nothing(offline):
    agent = offline()
    with pytest.raises(InvalidStepError):
        agent.step(OBS, 1, float("nan"), NEXT, False)
    assert agent.pending == 0
    assert agent.step(OBS, [0.1, 0.2], 1.0, NEXT, False) is True  # not held to a discrete action
    assert agent.pending == 1


# --- 10. float32's range ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("field, args", [
    ("obs[0]", ([1e39, 0.0, 0.0, 0.0], [0.5, 0.5], 0.0, NEXT, False)),
    ("reward", (OBS, [0.5, 0.5], -1e300, NEXT, False)),
    ("obs[0]", ([2**64, 0.0, 0.0, 0.0], [0.5, 0.5], 0.0, NEXT, False)),
    ("next_obs[3]", (OBS, [0.5, 0.5], 0.0, [0.0, 0.0, 0.0, -3.5e38], False)),
    ("action[1]", (OBS, [0.5, 1e39], 0.0, NEXT, False)),
], ids=["obs-1e39", "reward-minus-1e300", "obs-int-2**64", "next_obs-minus-3.5e38", "action-1e39"])
def test_numbers_beyond_float32_are_refused_and_teach_nothing(offline, field, args):
    agent = offline()
    with pytest.raises(InvalidStepError) as info:
        agent.step(*args)
    assert field in str(info.value)
    assert agent.pending == 0 and agent.stats["enqueued"] == 0
    # Nothing was learnt from the refused step (a continuous action of 2): a discrete one is taken.
    assert agent.step(OBS, 1, 0.0, NEXT, False) is True
    assert agent.pending == 1

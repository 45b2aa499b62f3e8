"""Three ``serve`` processes (replicas) on one real PostgreSQL, behind a round-robin load balancer.

The replicas are real server processes (``LocalServer`` with ``--store postgresql://...``) on a
database of the session's PostgreSQL (tests/server/conftest.py); the load balancer is
tests/support/roundrobin.py (each request to the next replica, a refused connection skipped).
The only faults are real ones: a replica SIGKILLed and started again.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from support.api import Api, login, wait_for
from support.roundrobin import RoundRobinProxy
from support.stream import obs_of

from agents_bar_stream import Client, RemoteAgent, StreamOptions
from agents_bar_stream.config import RetryPolicy
from agents_bar_stream.server.process import LocalServer

USER = ("alice", "alice-password-1")
REPLICAS = 3
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def pg_module_url(pg_databases):
    """A database for this module's replicas (they keep running from test to test)."""
    name, uri = pg_databases.create()
    yield uri
    pg_databases.drop(name)


def _start_all(servers: list[LocalServer]) -> None:
    """Start the stopped ones side by side (each imports torch: seconds of CPU)."""
    with concurrent.futures.ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(s.start, 120) for s in servers if not s.running]:
            future.result()


@pytest.fixture(scope="module")
def replicas(pg_module_url, tmp_path_factory):
    # --save-interval 1: a learner checkpoints every second, which bounds what a takeover relearns
    # and how old the other replicas' act policy can be.
    servers = [
        LocalServer(tmp_path_factory.mktemp(f"replica{i}"), users=[USER],
                    extra_args=["--store", pg_module_url, "--replica-id", f"r{i}", "--save-interval", "1"])
        for i in range(REPLICAS)
    ]
    try:
        _start_all(servers)
        yield servers
    finally:
        for s in servers:
            s.stop(timeout=30)


@pytest.fixture
def cluster(replicas):
    """The replicas, all running (a test that killed one may have failed before restarting it)."""
    _start_all(replicas)
    return replicas


@pytest.fixture
def balancer(cluster):
    with RoundRobinProxy([s.url for s in cluster]) as proxy:
        yield proxy


def _api(url: str) -> Api:
    return Api(url, login(url, *USER))


def test_a_token_and_an_agent_made_on_one_replica_work_on_the_others(cluster, agent_name):
    a, b, c = cluster
    token = login(a.url, *USER)  # signed with the key in the database, not a replica's own
    on_b, on_c = Api(b.url, token), Api(c.url, token)
    assert on_b.get("/agents/").status_code == 200
    Api(a.url, token).create_agent(agent_name)
    seen = on_b.agent(agent_name)  # at once: no cache, no propagation delay
    assert seen["config"] == {"obs_size": 4, "action_size": 2} and seen["steps_received"] == 0
    resp = on_c.send_steps(agent_name, "p", 0, [{"obs": obs_of(0), "action": [1], "reward": 1.0,
                                                  "next_obs": obs_of(1), "done": False}])
    assert resp.status_code == 200 and resp.json() == {"acked_seq": 0, "applied": 1, "duplicates": 0}
    assert on_b.get(f"/agents/{agent_name}/producers/p").json() == {"acked_seq": 0}
    act = on_c.post(f"/agents/{agent_name}/act", json=obs_of(0))
    assert act.status_code == 200 and act.json()["action"][0] in (0, 1)
    assert on_b.delete(f"/agents/{agent_name}").status_code == 202
    assert Api(a.url, token).get(f"/agents/{agent_name}").status_code == 404
    assert Api(a.url, "not.a-token").get("/agents/").status_code == 401


def test_50k_steps_through_three_replicas_one_killed_arrive_once_in_order(cluster, balancer, agent_name, tmp_path):
    # The agent only fills its replay buffer (warm_up): this test is about ingestion, and a
    # learner taking a core of this 2-core machine would only slow it down.
    api = _api(balancer.url)
    api.create_agent(agent_name, warm_up=1_000_000, hidden_layers=[16])
    client = Client(base_url=balancer.url, username=USER[0], password=USER[1])
    stream = StreamOptions(queue_dir=tmp_path / "queue", batch_size=500,
                           retry_policy=RetryPolicy(initial=0.05, max_delay=0.5))
    agent = RemoteAgent(client, agent_name, stream=stream)
    victim = cluster[1]
    n, kill_at, back_at = 50_000, 15_000, 35_000
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            restarted = None
            for i in range(n):
                # CartPole-sized steps (4 numbers, 2 actions), episodes of 200.
                assert agent.step(obs_of(i), i % 2, 1.0, obs_of(i + 1), i % 200 == 199) is True
                if i == kill_at:
                    # Killed while a request is in flight to it: whatever it was applying is
                    # committed or not at all, and its client never hears which.
                    wait_for(lambda: balancer.busy(1, "/steps "), 30, interval=0.0005,
                             message="a batch sent to the victim")
                    victim.kill()
                    restarted = pool.submit(victim.start, 120)
                elif i == back_at:
                    assert restarted is not None
                    restarted.result(timeout=120)  # the stream goes on meanwhile; now it has rejoined
                    served_before_rejoin = balancer.served[1]
            assert agent.flush(timeout=120), agent.stats
        stats = agent.stats
        log = api.log(agent_name)
    finally:
        agent.close(timeout=5)
    assert [int(e["step"]["obs"][0]) for e in log] == list(range(n))  # every step once, in order
    assert [e["seq"] for e in log] == list(range(n))
    assert stats["enqueued"] == n and stats["delivered"] == n and stats["dead_lettered"] == 0
    assert api.agent(agent_name)["steps_received"] == n
    # The outage was felt (requests refused or cut while the victim was down), and the restarted
    # replica took requests again after it rejoined.
    assert balancer.refused[1] + balancer.cut > 0, (balancer.refused, balancer.cut)
    assert balancer.served[1] > served_before_rejoin, balancer.served
    print(f"\nrequests served {dict(balancer.served)}, refused {dict(balancer.refused)}, cut {balancer.cut_requests}; "
          f"client retries {stats['retries']}, duplicates {stats['duplicates']}")
    api.cleanup()


def test_the_learner_moves_to_another_replica_when_its_own_dies(cluster, balancer, agent_name):
    api = _api(balancer.url)
    api.create_agent(agent_name, batch_size=16, hidden_layers=[16], warm_up=32)
    ids = [f"r{i}" for i in range(REPLICAS)]
    sent = 0

    def send(count: int) -> None:
        nonlocal sent
        for first in range(sent, sent + count, 250):
            steps = [{"obs": obs_of(i), "action": [i % 2], "reward": 1.0, "next_obs": obs_of(i + 1),
                      "done": i % 50 == 49} for i in range(first, first + 250)]
            resp = api.send_steps(agent_name, "p", first, steps)
            assert resp.status_code == 200, resp.text
        sent += count

    send(1500)
    info = wait_for(lambda: (lambda d: d if d["learner"] in ids and d["steps_learned"] > 0 else None)(
        api.agent(agent_name)), 30, message="a replica to learn the agent")
    holder = ids.index(info["learner"])
    survivors = [s for i, s in enumerate(cluster) if i != holder]
    watch = _api(survivors[0].url)
    wait_for(lambda: watch.agent(agent_name)["steps_learned"] >= 250, 30, message="a first checkpoint")
    try:
        cluster[holder].kill()
        killed_at = time.monotonic()
        info = wait_for(lambda: (lambda d: d if d["learner"] in ids and d["learner"] != ids[holder] else None)(
            watch.agent(agent_name)), 30, message="another replica to take the learner over")
        took = time.monotonic() - killed_at
        send(1000)  # through the balancer: the dead replica is skipped
        final = wait_for(lambda: (lambda d: d if d["steps_learned"] == d["steps_received"] == sent else None)(
            watch.agent(agent_name)), 90, message="learning to catch up with what was received")
        assert final["learner"] == info["learner"]
        print(f"\nlearner {ids[holder]} killed; {info['learner']} took over in {took:.1f} s")
        # Act on every surviving replica: those that do not learn it answer from the weights the
        # learner saved and announced. Once learning stops they all hold the same policy.
        for s in survivors:
            assert _api(s.url).post(f"/agents/{agent_name}/act", json=obs_of(0)).status_code == 200
        wait_for(lambda: len({_api(s.url).agent(agent_name)["policy_version"] for s in survivors}) == 1, 30,
                 message="every replica to act with the learner's last saved policy")
    finally:
        cluster[holder].start(120)
        api.cleanup()


def test_one_batch_sent_to_every_replica_at_once_is_applied_once(cluster, agent_name):
    # A retry routed to another replica while the first is still applying it: the producer's row
    # lock lets one replica apply the batch; the others answer with duplicates.
    token = login(cluster[0].url, *USER)
    apis = [Api(s.url, token) for s in cluster]
    apis[0].create_agent(agent_name)
    steps = [{"obs": obs_of(i), "action": [i % 2], "reward": 0.0, "next_obs": obs_of(i + 1), "done": False}
             for i in range(2000)]
    for first in (0, 2000):  # a new producer row, then an existing one
        batch = [dict(s, obs=obs_of(first + i)) for i, s in enumerate(steps)]
        with concurrent.futures.ThreadPoolExecutor(len(apis)) as pool:
            answers = list(pool.map(lambda a, b=batch, f=first: a.send_steps(agent_name, "p", f, b), apis))
        assert [r.status_code for r in answers] == [200] * len(apis), [r.text for r in answers]
        results = [r.json() for r in answers]
        assert sum(r["applied"] for r in results) == 2000
        assert sum(r["duplicates"] for r in results) == 2000 * (len(apis) - 1)
        assert {r["acked_seq"] for r in results} == {first + 1999}
    log = apis[1].log(agent_name)
    assert [e["seq"] for e in log] == list(range(4000))
    assert [int(e["step"]["obs"][0]) for e in log] == list(range(4000))
    apis[0].cleanup()


def test_learners_spread_over_the_replicas_and_come_back_to_a_restarted_one(cluster):
    # Three agents, three learning replicas: one learner each (a fair share is ceil(3 / 3)). When
    # one replica dies its agent goes to another (ceil(3 / 2) = 2 each); when it is back, the
    # replica holding two hands one over (saved first), and it is one each again.
    token = login(cluster[0].url, *USER)
    api = Api(cluster[0].url, token)
    names = [f"spread-{i}" for i in range(3)]
    for name in names:
        api.create_agent(name, warm_up=1_000_000, hidden_layers=[8])
    ids = {f"r{i}" for i in range(REPLICAS)}

    def learners(via: Api) -> list:
        return [via.agent(name)["learner"] for name in names]

    try:
        wait_for(lambda: set(learners(api)) == ids, 30, message="one learner per replica")
        victim = 2
        watch = Api(cluster[0].url, token)
        cluster[victim].kill()
        wait_for(lambda: set(learners(watch)) == ids - {f"r{victim}"}, 30, message="the dead replica's agent moved")
        cluster[victim].start(120)
        wait_for(lambda: set(learners(watch)) == ids, 30, message="an agent handed over to the restarted replica")
    finally:
        api.cleanup()


def test_binary_steps_taken_by_one_replica_read_back_exact_from_another(cluster, agent_name):
    # The binary encoding (issue 12) is stored by store.encode_steps, the same for both stores: an
    # 8x8 uint8 frame posted to one replica reads back bit-exact from another.
    import numpy as np
    from support.binary_steps import decode, encode, headers

    token = login(cluster[0].url, *USER)
    a, b = Api(cluster[0].url, token), Api(cluster[1].url, token)
    a.create_agent(agent_name, obs_size=64, obs_shape=[8, 8], obs_dtype="uint8")
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, size=(8, 8), dtype=np.uint8) for _ in range(11)]
    steps = [{"obs": frames[i], "action": [i % 2], "reward": 1.0, "next_obs": frames[i + 1], "done": False}
             for i in range(10)]
    resp = a.post(f"/agents/{agent_name}/steps", data=encode("p", 0, steps), headers=headers())
    assert resp.status_code == 200 and resp.json()["applied"] == 10, resp.text
    page = b.get(f"/agents/{agent_name}/steps", headers={"Accept": "application/x-agents-bar-steps"})
    assert page.status_code == 200, page.text
    back = decode(page.content)["steps"]
    assert [e["seq"] for e in back] == list(range(10))
    for entry, sent in zip(back, steps, strict=True):
        assert entry["step"]["obs"].dtype == np.uint8 and entry["step"]["obs"].tobytes() == sent["obs"].tobytes()
        assert entry["step"]["next_obs"].tobytes() == sent["next_obs"].tobytes()
    a.cleanup()

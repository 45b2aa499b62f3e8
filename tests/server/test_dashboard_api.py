"""The dashboard's page, assets and data route (``server/api/dashboard.py``) over HTTP, and its histories.

The page itself, in a real browser, is ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import sqlite3
import time

import pytest
import requests
from support.api import API, make_step, wait_for

from agents_bar_stream.server.curves import OPEN_EPISODES_KEPT, EpisodeReturns, SampleRing
from agents_bar_stream.server.store import SqliteStore

pytestmark = pytest.mark.timeout(120)


def _detail(resp: requests.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


# -- the page and its assets ---------------------------------------------------------------------


def test_the_page_loads_only_its_own_assets_under_a_strict_policy(server):
    resp = requests.get(f"{server.url}/", timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = {d.split()[0]: d.split()[1:] for d in resp.headers["content-security-policy"].split(";") if d.strip()}
    assert csp["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src"):
        assert csp[directive] == ["'self'"], directive  # no CDN, no inline code, no other host
    assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'none'"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    page = resp.text
    assert "<style" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page), "inline code the policy blocks"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(assets) == ["/static/dashboard.css", "/static/dashboard.js"]
    for path, kind in (("/static/dashboard.css", "text/css"), ("/static/dashboard.js", "text/javascript")):
        asset = requests.get(f"{server.url}{path}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), path
        assert b"http://" not in asset.content.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in \
            asset.content, f"{path} refers to another host"


@pytest.mark.parametrize("name", ["nothing.js", "index.html", "..%2Fstore.py", "%2E%2E"])
def test_unknown_assets_are_404(server, name):
    resp = requests.get(f"{server.url}/static/{name}", timeout=30)
    assert resp.status_code == 404 and resp.json()["detail"]


# -- the data route -----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer forged.token"}], ids=["none", "invalid"])
def test_the_data_route_needs_a_valid_token(server, headers):
    resp = requests.get(f"{server.url}{API}/dashboard", headers=headers, timeout=30)
    _detail(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_the_data_route_shows_only_the_callers_agents(api, other_api, agent_name):
    api.create_agent(agent_name)
    theirs = agent_name[:-1] + ("x" if agent_name[-1] != "x" else "y")
    other_api.create_agent(theirs)
    mine = api.get("/dashboard").json()
    assert agent_name in [a["name"] for a in mine["agents"]] and theirs not in [a["name"] for a in mine["agents"]]
    assert mine["user"] == "alice"
    assert agent_name not in [a["name"] for a in other_api.get("/dashboard").json()["agents"]]
    # Another account's agent is a 404 as everywhere in the API: names do not leak.
    assert "not found" in _detail(api.get("/dashboard", params={"agent": theirs}), 404)
    assert api.get("/dashboard", params={"agent": agent_name}).json()["agent"]["name"] == agent_name


@pytest.mark.parametrize("bad", ["", "a b", "../x", "x" * 129])
def test_a_bad_agent_parameter_is_422(api, bad):
    assert "agent name" in _detail(api.get("/dashboard", params={"agent": bad}), 422)


def _episode_steps(first: int, count: int, every: int) -> list:
    """Steps with done every ``every`` steps (of this producer), rewards that tell episodes apart."""
    steps = []
    for i in range(first, first + count):
        step = make_step(i, done=(i + 1) % every == 0)
        step["reward"] = float(i % 7) - 2.5
        steps.append(step)
    return steps


def test_counts_producers_learning_curve_and_returns(api, agent_name):
    api.create_agent(agent_name, batch_size=16)
    # Two producers whose batches interleave in the log: each one's episodes are summed apart.
    a, b = _episode_steps(0, 300, 25), _episode_steps(1000, 200, 40)
    before = time.time()
    for start in range(0, 300, 100):
        assert api.send_steps(agent_name, "prod-a", start, a[start:start + 100]).status_code == 200
        if start < 200:
            assert api.send_steps(agent_name, "prod-b", start, b[start:start + 100]).status_code == 200

    def learned():
        doc = api.get("/dashboard", params={"agent": agent_name}).json()
        row = next(r for r in doc["agents"] if r["name"] == agent_name)
        return doc if row["steps_learned"] == 500 and doc["agent"]["loss"]["points"] else None

    doc = wait_for(learned, 90, 0.2, "the agent to learn all 500 steps")
    row = next(r for r in doc["agents"] if r["name"] == agent_name)
    assert row["steps_received"] == 500 and row["model"] == "dqn" and row["learner"] == "idle"
    detail = doc["agent"]
    assert detail["producer_count"] == 2
    assert {p["producer_id"]: p["acked_seq"] for p in detail["producers"]} == {"prod-a": 299, "prod-b": 199}
    for p in detail["producers"]:
        assert before - 1 <= p["last_seen"] <= doc["server_time"] + 1
    assert detail["loss"]["names"] == ["loss"]
    assert all(len(p) == 2 and p[1] >= 0 for p in detail["loss"]["points"])

    def returns(steps, every):
        return [sum(s["reward"] for s in steps[k:k + every]) for k in range(0, len(steps), every)]

    # The log order: a[0:100], b[0:100], a[100:200], b[100:200], a[200:300]; each producer's
    # episodes end in its own order.
    got = [r for _, r in detail["returns"]]
    assert sorted(got) == pytest.approx(sorted(returns(a, 25) + returns(b, 40)))
    assert detail["episodes"] == 12 + 5


def test_ingest_rate_is_measured_between_polls(api, agent_name):
    api.create_agent(agent_name)
    first = api.get("/dashboard", params={"agent": agent_name}).json()
    assert next(r for r in first["agents"] if r["name"] == agent_name)["ingest_rate"] is None
    sent = 0

    def rate():
        nonlocal sent
        assert api.send_steps(agent_name, "p", sent, [make_step(sent + k) for k in range(50)]).status_code == 200
        sent += 50
        doc = api.get("/dashboard", params={"agent": agent_name}).json()
        return next(r for r in doc["agents"] if r["name"] == agent_name)["ingest_rate"]

    measured = wait_for(rate, 30, 0.2, "an ingest rate")
    assert measured > 0


# -- the histories ------------------------------------------------------------------------------


def test_the_learning_curve_spans_the_whole_run_in_bounded_points():
    ring = SampleRing(points=8, interval=1.0)
    for t in range(1000):
        ring.offer(float(t), {"loss": float(t)})
    samples = ring.snapshot()
    assert len(samples) <= 8
    assert samples[0][0] == 0.0 and samples[-1][0] >= 1000 - 2 * ring.interval
    times = [t for t, _ in samples]
    assert times == sorted(times)
    assert not ring.offer(samples[-1][0] + ring.interval / 2, {"loss": 1.0})  # too soon
    assert not ring.offer(10**6, {})  # no loss known yet: nothing to draw


def test_episode_returns_per_producer_and_bounded():
    ret = EpisodeReturns(kept=3)
    ret.add(1, "a", 1.0, False)
    ret.add(2, "b", 10.0, False)
    ret.add(3, "a", 2.0, True)
    ret.add(4, "b", 20.0, True)
    assert ret.snapshot() == [(3, 3.0), (4, 30.0)]
    for k in range(5):
        ret.add(5 + k, None, 1.0, True)
    assert len(ret.snapshot()) == 3 and ret.episodes == 7
    for k in range(OPEN_EPISODES_KEPT + 10):
        ret.add(100, f"p{k}", 1.0, False)
    assert len(ret._open) == OPEN_EPISODES_KEPT


def test_an_older_database_gets_last_seen(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    # The producers table as servers before the dashboard made it.
    conn.execute("CREATE TABLE producers (agent_id INTEGER NOT NULL, producer_id TEXT NOT NULL, "
                 "acked_seq INTEGER NOT NULL, PRIMARY KEY (agent_id, producer_id)) WITHOUT ROWID")
    conn.execute("INSERT INTO producers VALUES (999, 'old', 41)")
    conn.commit()
    conn.close()
    store = SqliteStore(path, synchronous="NORMAL")
    try:
        row = store.create_agent(owner="u", name="n", model="dqn", description=None,
                                 config={"obs_size": 4, "action_size": 2}, is_active=True)
        store.append_batch(row.id, "new", 0, [make_step(0)])
        producers, count = store.producers(row.id, 10)
        assert count == 1 and producers[0].producer_id == "new" and producers[0].last_seen is not None
        old, _ = store.producers(999, 10)
        assert [(p.producer_id, p.acked_seq, p.last_seen) for p in old] == [("old", 41, None)]
    finally:
        store.close()


def test_a_server_without_learners_says_so(server_factory, user, agent_name):
    from support.api import Api, login

    server = server_factory(extra_args=["--no-learn"], name="no-learn")
    api = Api(server.url, login(server.url, *user))
    try:
        api.create_agent(agent_name)
        assert api.send_steps(agent_name, "p", 0, [make_step(k) for k in range(10)]).status_code == 200
        row = api.get("/dashboard").json()["agents"][0]
        assert (row["name"], row["steps_received"], row["steps_learned"], row["learner"]) == (agent_name, 10, 0,
                                                                                             "stopped")
    finally:
        api.cleanup()

"""GET /metrics (issue 15): scraped with a real HTTP client from a real server process, parsed with
prometheus_client's own parser; the values must move as steps are sent, acted on and learned."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.api import Api, login, make_steps, wait_for

from agents_bar_stream import Client, RemoteAgent, StreamOptions

TOKEN = "metrics-token-for-the-tests-0123456789"


def scrape(url: str, token: str | None = TOKEN) -> dict:
    """``{(sample name, frozenset(labels)): value}`` of one scrape."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.get(f"{url}/metrics", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory, user):
    """A private server whose /metrics needs TOKEN (module-wide: one start for these tests)."""
    from agents_bar_stream.server.process import LocalServer

    root = tmp_path_factory.mktemp("metrics")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    srv = LocalServer(root / "data", users=[user],
                      extra_args=["--metrics-token-file", str(token_file)])
    srv.start(timeout=120)
    yield srv
    srv.stop(timeout=30)


@pytest.mark.timeout(120)
def test_values_move_as_steps_are_sent_acted_and_learned(metrics_server, user, agent_name, tmp_path):
    url = metrics_server.url
    api = Api(url, login(url, *user))
    agent_label = f"{user[0]}/{agent_name}"
    try:
        api.create_agent(agent_name)
        before = scrape(url)
        assert value(before, "agents_bar_agent_log_steps", agent=agent_label) == 0
        assert api.send_steps(agent_name, "p1", 0, make_steps(0, 10)).status_code == 200
        assert api.send_steps(agent_name, "p1", 5, make_steps(5, 10)).status_code == 200  # 5 repeats, 5 new
        assert api.post(f"/agents/{agent_name}/act", json=[0.1, 0.2, 0.3, 0.4]).status_code == 200
        assert requests.get(f"{url}/api/v1/no/such/route", timeout=10).status_code == 404

        after = scrape(url)
        assert value(after, "agents_bar_steps_received_total", agent=agent_label) == 20
        assert value(after, "agents_bar_steps_applied_total", agent=agent_label) == 15
        assert value(after, "agents_bar_steps_duplicate_total", agent=agent_label) == 5
        assert value(after, "agents_bar_agent_log_steps", agent=agent_label) == 15
        assert value(after, "agents_bar_producer_acked_seq", agent=agent_label, producer="p1") == 14
        assert value(after, "agents_bar_producer_lag_seconds", agent=agent_label, producer="p1") >= 0
        # Routes by template, never by raw path: the agent's name is not a label value of them.
        steps_route = "/api/v1/agents/{name}/steps"
        assert value(after, "agents_bar_http_responses_total", method="POST", route=steps_route, status="200") == 2
        assert value(after, "agents_bar_http_request_duration_seconds_count", method="POST", route=steps_route) == 2
        assert value(after, "agents_bar_http_responses_total", method="GET", route="unmatched", status="404") == 1
        assert not any(agent_name in dict(labels).get("route", "") for _, labels in after)
        acts = "agents_bar_act_duration_seconds_count"
        assert value(after, acts) == value(before, acts) + 1

        # The learner catches up: learned reaches the log, the backlog drains to 0.
        def learned() -> bool:
            s = scrape(url)
            return (value(s, "agents_bar_steps_learned_total", agent=agent_label) == 15
                    and ("agents_bar_learner_backlog_steps", frozenset({("agent", agent_label)})) in s
                    and value(s, "agents_bar_learner_backlog_steps", agent=agent_label) == 0)

        wait_for(learned, 60, interval=0.5, message="the learner to learn the 15 steps")

        # The streaming client's steps count too.
        client = Client(base_url=url, username=user[0], password=user[1])
        with RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path / "q")) as agent:
            for i in range(30):
                agent.step([0.1 * i, 0.0, 0.0, 0.0], i % 2, 1.0, [0.0, 0.1, 0.0, 0.0], False)
            assert agent.flush(timeout=30)
        final = scrape(url)
        assert value(final, "agents_bar_steps_applied_total", agent=agent_label) == 45
        assert value(final, "agents_bar_agent_log_steps", agent=agent_label) == 45
    finally:
        api.cleanup()


@pytest.mark.timeout(60)
def test_metrics_need_the_token(metrics_server, server, user):
    url = metrics_server.url
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = requests.get(f"{url}/metrics", headers=headers, timeout=10)
        assert resp.status_code == 401 and "metrics token" in resp.json()["detail"]
    # A user's login token is not the metrics token: the metrics name every account's agents.
    user_token = login(url, *user)
    assert requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {user_token}"},
                        timeout=10).status_code == 401
    # A server started without a metrics token refuses and says how to set one up.
    resp = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert resp.status_code == 403 and "--metrics-token-file" in resp.json()["detail"]


def test_two_apps_in_one_process_have_their_own_registries(tmp_path):
    # In one process (the same as the tests' servers would be in an embedding program): each app
    # registers its metrics in its own registry, so building a second one does not fail with
    # "Duplicated timeseries" and counts nothing of the first.
    from prometheus_client import generate_latest

    from agents_bar_stream.server.app import create_app

    first, second = (create_app(tmp_path / f"d{i}", learn=False, metrics="public") for i in range(2))
    for _ in range(3):
        first.state.metrics.request_done("GET", "/api/v1/stream/info", 200, 0.001)

    def parsed(app) -> dict:
        text = generate_latest(app.state.metrics.registry).decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    key = ("agents_bar_http_responses_total",
           frozenset({"method": "GET", "route": "/api/v1/stream/info", "status": "200"}.items()))
    assert parsed(first)[key] == 3 and key not in parsed(second)
    off = create_app(tmp_path / "d3", learn=False, metrics="off")
    assert off.state.metrics is None and "/metrics" not in {getattr(r, "path", "") for r in off.routes}
    for app in (first, second, off):
        app.state.server.store.close()

"""agents_bar_stream.metrics (issue 15): a collector over real RemoteAgents' stats on the real server,
registered in a registry of its own, scraped with generate_latest and parsed back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents_bar_stream import ConfigurationError
from agents_bar_stream.metrics import StreamCollector


def scrape(registry: CollectorRegistry) -> dict:
    text = generate_latest(registry).decode()
    return {(s.name, s.labels.get("agent")): s.value for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.timeout(90)
def test_values_match_stats(make_agent, agent_name):
    one = make_agent(agent_name + "-a")
    two = make_agent(agent_name + "-b", fallback=lambda obs: 0)
    registry = CollectorRegistry()
    collector = StreamCollector([one])
    registry.register(collector)
    collector.add(two)
    collector.add(two)  # the same agent again: nothing changes
    for i in range(25):
        one.step([0.1 * i, 0, 0, 0], 1, 1.0, [0, 0, 0, 0.1 * i], False)
    assert one.flush(timeout=30)
    for i in range(7):
        two.step([0.1 * i, 0, 0, 0], 1, 1.0, [0, 0, 0, 0.1 * i], False)
    for _ in range(3):
        one.act([0.1, 0.2, 0.3, 0.4])
    samples = scrape(registry)
    for agent in (one, two):
        stats, name = agent.stats, agent.agent_name
        assert samples[("agents_bar_stream_steps_enqueued_total", name)] == stats["enqueued"]
        assert samples[("agents_bar_stream_steps_delivered_total", name)] == stats["delivered"]
        assert samples[("agents_bar_stream_delivery_retries_total", name)] == stats["retries"]
        assert samples[("agents_bar_stream_steps_dead_lettered_total", name)] == stats["dead_lettered"]
        assert samples[("agents_bar_stream_act_fallbacks_total", name)] == stats["act_fallbacks"]
        assert samples[("agents_bar_stream_act_seconds_count", name)] == stats["act_calls"]
        assert samples[("agents_bar_stream_act_seconds_sum", name)] == pytest.approx(stats["act_seconds"])
    assert samples[("agents_bar_stream_steps_delivered_total", one.agent_name)] == 25
    assert samples[("agents_bar_stream_steps_pending", one.agent_name)] == 0
    assert samples[("agents_bar_stream_oldest_pending_age_seconds", one.agent_name)] == 0
    assert samples[("agents_bar_stream_act_seconds_count", one.agent_name)] == 3
    assert samples[("agents_bar_stream_act_seconds_sum", one.agent_name)] > 0
    assert samples[("agents_bar_stream_online", one.agent_name)] == 1
    assert samples[("agents_bar_stream_steps_enqueued_total", two.agent_name)] == 7
    assert two.flush(timeout=30)
    assert scrape(registry)[("agents_bar_stream_steps_delivered_total", two.agent_name)] == 7
    collector.remove(two)
    assert ("agents_bar_stream_steps_delivered_total", two.agent_name) not in scrape(registry)


@pytest.mark.timeout(60)
def test_pending_and_oldest_age_while_nothing_is_delivered(client, tmp_path, agent_name):
    from agents_bar_stream import RemoteAgent, StreamOptions

    # flush_interval of an hour and no flush: the steps wait in the queue, visibly.
    agent = RemoteAgent(client, agent_name, stream=StreamOptions(queue_dir=tmp_path / "q", flush_interval=3600))
    registry = CollectorRegistry()
    registry.register(StreamCollector([agent]))
    try:
        agent.create_agent(4, 2, "dqn")
        for i in range(5):
            agent.step([0.1 * i, 0, 0, 0], 1, 1.0, [0, 0, 0, 0.1 * i], False)
        import time

        time.sleep(0.3)
        samples = scrape(registry)
        assert samples[("agents_bar_stream_steps_pending", agent_name)] == agent.pending == 5
        assert samples[("agents_bar_stream_oldest_pending_age_seconds", agent_name)] >= 0.25
    finally:
        agent.remove(agent_name=agent_name)
        agent.close(timeout=0)


def test_bad_arguments(client, tmp_path):
    from agents_bar_stream import RemoteAgent, StreamOptions

    with pytest.raises(ConfigurationError, match="RemoteAgents"):
        StreamCollector(["not an agent"])
    collector = StreamCollector()
    a = RemoteAgent(client, "same-name", stream=StreamOptions(queue_dir=tmp_path / "a"))
    b = RemoteAgent(client, "same-name", stream=StreamOptions(queue_dir=tmp_path / "b"))
    collector.add(a)
    with pytest.raises(ConfigurationError, match="same-name"):
        collector.add(b)


@pytest.mark.timeout(60)
def test_optional_import():
    """`import agents_bar_stream` loads neither this module nor prometheus-client; without
    prometheus-client, importing the module says what to install."""
    code = textwrap.dedent("""
        import sys
        import agents_bar_stream
        assert "agents_bar_stream.metrics" not in sys.modules and "prometheus_client" not in sys.modules
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "prometheus_client" or name.startswith("prometheus_client."):
                    raise ImportError("No module named 'prometheus_client' (blocked by the test)")
        sys.meta_path.insert(0, Block())
        try:
            import agents_bar_stream.metrics
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without prometheus_client")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'agents-bar-stream[metrics]'" in out.stdout

"""A Prometheus collector over RemoteAgents' ``stats`` (needs ``pip install 'agents-bar-stream[metrics]'``).

::

    from prometheus_client import REGISTRY, start_http_server
    from agents_bar_stream.metrics import StreamCollector

    REGISTRY.register(StreamCollector(agent))   # or StreamCollector() and .add(agent) for each
    start_http_server(9100)

Each scrape reads every agent's ``stats`` once (a few counters and one small read of the queue's
oldest step): nothing is sampled in between, so a scrape is always current. Every metric has the
label ``agent`` (the agent's name; two agents of one name in one process would collide, and are
refused by :meth:`StreamCollector.add`).

``import agents_bar_stream`` never imports this module, nor prometheus-client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "agents_bar_stream.metrics needs prometheus-client: pip install 'agents-bar-stream[metrics]' "
        f"(or pip install prometheus-client); {exc}") from exc

from agents_bar_stream.exceptions import ConfigurationError

__all__ = ["StreamCollector"]

# (stats key, metric name, help) of the counters; each name gets prometheus' "_total".
_COUNTERS = (
    ("enqueued", "agents_bar_stream_steps_enqueued", "Steps step() queued"),
    ("delivered", "agents_bar_stream_steps_delivered", "Steps the server acknowledged"),
    ("duplicates", "agents_bar_stream_steps_duplicate", "Steps the server already had (re-sent after a lost answer)"),
    ("retries", "agents_bar_stream_delivery_retries", "Failed delivery attempts that were retried"),
    ("dead_lettered", "agents_bar_stream_steps_dead_lettered", "Steps the server refused for good (dead letters)"),
    ("dropped", "agents_bar_stream_steps_dropped", "Steps on_full='drop_oldest' removed undelivered"),
    ("act_fallbacks", "agents_bar_stream_act_fallbacks", "act() calls answered by the fallback"),
    ("act_retries", "agents_bar_stream_act_retries", "act() requests retried within their deadline"),
)
_GAUGES = (
    ("pending", "agents_bar_stream_steps_pending", "Steps queued and not yet acknowledged"),
    ("bytes_pending", "agents_bar_stream_bytes_pending", "Bytes of queued steps (an estimate after a reopen)"),
)


class StreamCollector(Collector):
    """Exports the ``stats`` of the RemoteAgents given (or :meth:`add`-ed later) at each scrape.

    Metrics (label ``agent``): ``agents_bar_stream_steps_pending``, ``..._bytes_pending``,
    ``..._oldest_pending_age_seconds`` (0 when nothing is pending), ``..._online`` (1, 0, or absent
    before the first attempt), the counters ``..._steps_enqueued_total``, ``..._steps_delivered_total``,
    ``..._steps_duplicate_total``, ``..._delivery_retries_total``, ``..._steps_dead_lettered_total``,
    ``..._steps_dropped_total``, ``..._act_fallbacks_total``, ``..._act_retries_total``, and the summary
    ``agents_bar_stream_act_seconds`` (``_count`` act() calls, ``_sum`` their seconds: the mean latency).
    """

    def __init__(self, agents: Iterable[Any] = ()) -> None:
        self._agents: dict[str, Any] = {}
        self._lock = threading.Lock()
        for agent in agents:
            self.add(agent)

    def add(self, agent: Any) -> None:
        """Export ``agent`` (a RemoteAgent) too. Raises ConfigurationError for a second agent of the same name."""
        if not hasattr(agent, "stats") or not isinstance(getattr(agent, "agent_name", None), str):
            raise ConfigurationError(f"StreamCollector exports RemoteAgents, got {type(agent).__name__}")
        with self._lock:
            known = self._agents.get(agent.agent_name)
            if known is not None and known is not agent:
                raise ConfigurationError(f"another agent named {agent.agent_name!r} is exported already")
            self._agents[agent.agent_name] = agent

    def remove(self, agent: Any) -> None:
        """Stop exporting ``agent`` (no error when it was not exported)."""
        name = getattr(agent, "agent_name", None)
        with self._lock:
            if isinstance(name, str) and self._agents.get(name) is agent:
                del self._agents[name]

    def describe(self) -> list[Metric]:
        # Nothing to describe ahead of a scrape: registering must not read any agent's stats.
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            agents = list(self._agents.items())
        counters = {key: CounterMetricFamily(name, text, labels=["agent"]) for key, name, text in _COUNTERS}
        gauges = {key: GaugeMetricFamily(name, text, labels=["agent"]) for key, name, text in _GAUGES}
        age = GaugeMetricFamily("agents_bar_stream_oldest_pending_age_seconds",
                                "Age of the oldest step not yet acknowledged (0 when none is pending)",
                                labels=["agent"])
        online = GaugeMetricFamily("agents_bar_stream_online", "1 when the last delivery attempt reached the server",
                                   labels=["agent"])
        act = SummaryMetricFamily("agents_bar_stream_act_seconds", "Time spent in act()", labels=["agent"])
        for name, agent in agents:
            stats = agent.stats
            for key, family in counters.items():
                family.add_metric([name], stats.get(key) or 0)
            for key, family in gauges.items():
                family.add_metric([name], stats.get(key) or 0)
            age.add_metric([name], stats.get("oldest_pending_age") or 0.0)
            if stats.get("online") is not None:
                online.add_metric([name], 1.0 if stats["online"] else 0.0)
            act.add_metric([name], count_value=stats.get("act_calls") or 0, sum_value=stats.get("act_seconds") or 0.0)
        yield from counters.values()
        yield from gauges.values()
        yield age
        yield online
        yield act

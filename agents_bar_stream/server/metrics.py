"""``GET /metrics``: the server in Prometheus' text format (``prometheus-client``).

One :class:`ServerMetrics` per application, with its own ``CollectorRegistry``: two applications
in one process (the tests) never share or collide on a metric. What it exports:

- ``agents_bar_steps_received_total{agent}``, ``..._applied_total``, ``..._duplicate_total``: steps
  in accepted ``POST /steps`` batches (received = applied + duplicates), counted since start;
  legacy ``POST /step`` steps count as received and applied.
- ``agents_bar_agent_log_steps{agent}`` (steps in the agent's log), ``agents_bar_steps_learned_total{agent}``
  (the learner's position: ``rate()`` of it is the learn rate) and ``agents_bar_learner_backlog_steps{agent}``
  (log minus learned), read from the store and the learners at each scrape.
- ``agents_bar_producer_acked_seq{agent,producer}`` and ``agents_bar_producer_lag_seconds{agent,producer}``:
  each producer's acknowledged position, and the seconds since a batch of it last moved that
  position (the store's ``last_seen``; no lag sample for a producer not seen since that column
  was added). A worker that stops delivering shows as a growing lag.
- ``agents_bar_http_request_duration_seconds{method,route}`` (histogram) and
  ``agents_bar_http_responses_total{method,route,status}``: ``route`` is the route's template
  (``/api/v1/agents/{name}/steps``), never the raw path, so that the labels stay few;
  ``unmatched`` for paths no route knows.
- ``agents_bar_act_duration_seconds`` (histogram): ``POST .../act``, from request to answer.

``agent`` is ``owner/name``. The metrics name every account's agents: see ``create_app``'s
``metrics`` for who may read them.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from agents_bar_stream.server.errors import HTTPProblem

__all__ = ["METRICS_MODES", "MetricsMiddleware", "ServerMetrics", "metrics_endpoint"]

#: Who may read /metrics: anyone, a bearer of the metrics token, or nobody (no route).
METRICS_MODES = ("public", "token", "off")

# Request latencies from a fast ack (~1 ms) to a slow snapshot upload.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The counters the routes feed, and a collector reading the rest at scrape time."""

    def __init__(self, server_state: Any, *, mode: str = "token", token: str | None = None) -> None:
        if mode not in METRICS_MODES:
            raise ValueError(f"metrics must be one of {METRICS_MODES}, got {mode!r}")
        self.mode = mode
        self._token = token
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.received = Counter("agents_bar_steps_received", "Steps in accepted batches (applied + duplicates)",
                                ["agent"], registry=reg)
        self.applied = Counter("agents_bar_steps_applied", "Steps appended to the agent's log", ["agent"], registry=reg)
        self.duplicates = Counter("agents_bar_steps_duplicate", "Steps a producer sent again (already applied)",
                                  ["agent"], registry=reg)
        self.latency = Histogram("agents_bar_http_request_duration_seconds", "Request latency by route template",
                                 ["method", "route"], buckets=_LATENCY_BUCKETS, registry=reg)
        self.responses = Counter("agents_bar_http_responses", "Responses by route template and status",
                                 ["method", "route", "status"], registry=reg)
        self.act = Histogram("agents_bar_act_duration_seconds", "POST /agents/{name}/act, request to answer",
                             buckets=_LATENCY_BUCKETS, registry=reg)
        reg.register(_StateCollector(server_state))

    def steps(self, owner: str, name: str, applied: int, duplicates: int) -> None:
        """Steps of one accepted request of an agent (a hook of the step routes)."""
        agent = f"{owner}/{name}"
        self.received.labels(agent).inc(applied + duplicates)
        if applied:
            self.applied.labels(agent).inc(applied)
        if duplicates:
            self.duplicates.labels(agent).inc(duplicates)

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route).observe(seconds)
        self.responses.labels(method, route, str(status)).inc()
        if method == "POST" and route.endswith("/act"):
            self.act.observe(seconds)

    def check_access(self, request: Request) -> None:
        """Raise a 401 unless the request may read the metrics (``mode``)."""
        if self.mode == "public":
            return
        if self._token is None:
            raise HTTPProblem(403, "/metrics needs a token: start the server with --metrics-token-file FILE "
                              "(and send Authorization: Bearer <its content>), or --metrics public")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the token was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            raise HTTPProblem(401, "send Authorization: Bearer <the metrics token>",
                              headers={"WWW-Authenticate": "Bearer"})


class _StateCollector:
    """Reads the log lengths, the learners' positions and the producers at each scrape."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def describe(self) -> list:
        return []

    def collect(self):
        store, learners = self.state.store, self.state.learners
        logged = GaugeMetricFamily("agents_bar_agent_log_steps", "Steps in the agent's log", labels=["agent"])
        learned = CounterMetricFamily("agents_bar_steps_learned", "Steps the learner has read from the log",
                                      labels=["agent"])
        backlog = GaugeMetricFamily("agents_bar_learner_backlog_steps", "Steps logged and not yet learned",
                                    labels=["agent"])
        names: dict[int, str] = {}
        for row in store.list_agents():
            agent = f"{row.owner}/{row.name}"
            names[row.id] = agent
            logged.add_metric([agent], row.steps_received)
            runtime = learners.peek(row.id)
            if runtime is not None:  # not loaded yet after a restart: its position is not known
                learned.add_metric([agent], runtime.cursor)
                backlog.add_metric([agent], max(0, row.steps_received - runtime.cursor))
        acked = GaugeMetricFamily("agents_bar_producer_acked_seq", "A producer's acknowledged sequence number",
                                  labels=["agent", "producer"])
        lag = GaugeMetricFamily("agents_bar_producer_lag_seconds",
                                "Seconds since a batch of the producer last moved its acked_seq",
                                labels=["agent", "producer"])
        now = time.time()
        for agent_id, producer, seq, last_seen in store.producer_positions():
            if agent_id not in names:  # a producer of an agent deleted since list_agents()
                continue
            acked.add_metric([names[agent_id], producer], seq)
            if last_seen is not None:
                lag.add_metric([names[agent_id], producer], max(0.0, now - last_seen))
        return [logged, learned, backlog, acked, lag]


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request by its route's template (set by the router in the scope)."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # what the client gets when the application raises

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.request_done(scope["method"], route, status[0], time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    metrics: ServerMetrics = request.app.state.metrics
    metrics.check_access(request)
    # The collector reads the database: off the event loop.
    body = await run_in_threadpool(generate_latest, metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""The dashboard: a page at ``/``, its own static assets, and the JSON it polls (``GET /api/v1/dashboard``).

The page (``server/static/``) is plain HTML, CSS and JavaScript shipped in the package: no CDN,
no framework, nothing fetched from elsewhere, which is what lets its Content-Security-Policy
allow only the server's own origin. It logs in with the API's own ``POST /login/access-token``,
keeps the token in ``sessionStorage`` and sends it as ``Authorization: Bearer`` (never a cookie:
see docs/security.md, "The dashboard"), so the data route is authenticated like every other.

What the data route reports, and where each number lives:

- steps received and producers' ``acked_seq``/``last_seen``: the store (durable);
- steps learned, learner state, the learning curve and episode returns: the agent's runtime, in
  memory (``curves.py``), empty again after a restart;
- ingest and learning rates: differences between this route's own readings (in memory, per
  application, :class:`Rates`), so the first poll after a start has none yet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from agents_bar_stream.protocol import API_PREFIX, is_valid_agent_name
from agents_bar_stream.server.api.deps import CurrentUser, State
from agents_bar_stream.server.errors import HTTPProblem, json_response
from agents_bar_stream.server.learner import AgentRuntime
from agents_bar_stream.server.state import ServerState
from agents_bar_stream.server.store import AgentRow

__all__ = ["PAGE_HEADERS", "Rates", "install"]

#: Producers listed per agent (the most recently seen; the total is given too).
PRODUCERS_LISTED = 20
#: Seconds over which the ingest and learning rates are averaged.
RATE_WINDOW = 10.0
#: Readings kept per agent for the rates (one per RATE_MIN_GAP at most).
RATE_READINGS = 64
RATE_MIN_GAP = 0.25

# The page runs only its own script and style, and talks only to this server. No 'unsafe-inline':
# an agent name or a description that slipped into the page as markup could not run. The chart
# is drawn with DOM calls (SVG elements, CSSOM), which this policy allows.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
#: Headers of the page and its assets.
PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# The assets the page may load, and their types: a fixed list, so no path from a request ever
# reaches the file system.
_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


class Rates:
    """Steps per second received and learned by each agent, from successive readings of the counts.

    Readings are taken when the dashboard asks (at most one per ``RATE_MIN_GAP`` per agent) and
    kept per owner, only for the agents the owner has now: a deleted agent's readings go with it.
    """

    def __init__(self) -> None:
        self._readings: dict[str, dict[int, deque[tuple[float, int, int]]]] = {}
        self._lock = threading.Lock()

    def update(self, owner: str, counts: dict[int, tuple[int, int]], now: float) -> dict[int, tuple[Any, Any]]:
        """Record ``{agent_id: (received, learned)}`` at ``now``; ``{agent_id: (ingest/s, learn/s)}``.

        A rate is ``None`` until two readings at least a second apart exist within the window.
        """
        out: dict[int, tuple[Any, Any]] = {}
        with self._lock:
            old = self._readings.get(owner, {})
            mine = {agent_id: old.get(agent_id) or deque(maxlen=RATE_READINGS) for agent_id in counts}
            self._readings[owner] = mine
            for agent_id, (received, learned) in counts.items():
                readings = mine[agent_id]
                if not readings or now - readings[-1][0] >= RATE_MIN_GAP:
                    readings.append((now, received, learned))
                base = next((r for r in readings if now - r[0] <= RATE_WINDOW), None)
                if base is None or now - base[0] < 1.0:
                    out[agent_id] = (None, None)
                    continue
                span = now - base[0]
                # A count that went down (a restart that relearns from the last save) has no rate.
                ingest = (received - base[1]) / span if received >= base[1] else None
                learn = (learned - base[2]) / span if learned >= base[2] else None
                out[agent_id] = (ingest, learn)
        return out


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: the page, its assets and the data route."""
    app.state.dashboard_rates = Rates()
    app.include_router(router)


router = APIRouter()


def _asset(name: str) -> bytes:
    return (resources.files("agents_bar_stream.server") / "static" / name).read_bytes()


@router.get("/", include_in_schema=False)
async def page() -> Response:
    return Response(_asset("index.html"), media_type=_ASSETS["index.html"], headers=PAGE_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in _ASSETS or name == "index.html":
        raise HTTPProblem(404, f"no asset {name!r}")
    return Response(_asset(name), media_type=_ASSETS[name], headers=PAGE_HEADERS)


@router.get(f"{API_PREFIX}/dashboard")
async def data(request: Request, user: CurrentUser, state: State) -> Response:
    """The caller's agents and, for one of them (``?agent=NAME``, else the first), its details."""
    selected = request.query_params.get("agent")
    if selected is not None and not is_valid_agent_name(selected):
        raise HTTPProblem(422, "agent must be an agent name: 1-128 characters of [A-Za-z0-9_.-]")
    rates: Rates = request.app.state.dashboard_rates
    doc = await run_in_threadpool(_build, state, rates, user, selected)
    if doc is None:
        raise HTTPProblem(404, f"agent {selected!r} not found")
    return json_response(doc, headers={"Cache-Control": "no-store"})


def _build(state: ServerState, rates: Rates, user: str, selected: str | None) -> dict[str, Any] | None:
    rows = state.store.list_agents(user)
    now = time.time()
    runtimes = {row.id: state.learners.peek(row.id) for row in rows}
    # progress(): with replicas on PostgreSQL, the learner's own count, wherever it runs.
    progress = {row.id: state.learners.progress(row.id) for row in rows}
    learned = {row.id: progress[row.id]["steps_learned"] for row in rows}
    measured = rates.update(user, {row.id: (row.steps_received, learned[row.id]) for row in rows}, time.monotonic())
    agents = []
    for row in rows:
        ingest, learn = measured[row.id]
        agents.append({
            "name": row.name,
            "model": row.model,
            "is_active": row.is_active,
            "steps_received": row.steps_received,
            "steps_learned": learned[row.id],
            "ingest_rate": ingest,
            "learn_rate": learn,
            **_learner(runtimes[row.id], row, progress[row.id]["learner"], state.learners.replica_id),
        })
    detail = None
    if selected is not None or rows:
        chosen = next((r for r in rows if r.name == selected), None) if selected is not None else rows[0]
        if chosen is None:
            return None
        detail = _detail(state, chosen, runtimes[chosen.id])
    return {"user": user, "server_time": now, "agents": agents, "agent": detail}


def _learner(runtime: AgentRuntime | None, row: AgentRow, replica: str | None, me: str) -> dict[str, Any]:
    """What the agent's learner is doing: ``learner`` (a word) and its error count."""
    if replica is not None and replica != me:  # replicas on PostgreSQL: another one learns it
        return {"learner": f"on {replica}", "learn_errors": 0}
    if runtime is None:
        # Not built yet (the server loads agents one by one after a start) or it failed to build.
        return {"learner": "not loaded", "learn_errors": 0}
    thread = runtime._thread  # None when the server runs without learning (create_app(learn=False))
    if thread is None or not thread.is_alive():
        word = "stopped"
    elif runtime.cursor < row.steps_received:
        word = "learning"
    else:
        word = "idle"
    return {"learner": word, "learn_errors": runtime.learn_errors}


def _detail(state: ServerState, row: AgentRow, runtime: AgentRuntime | None) -> dict[str, Any]:
    producers, count = state.store.producers(row.id, PRODUCERS_LISTED)
    loss_samples = runtime.loss_curve.snapshot() if runtime is not None else []
    names = sorted({name for _, values in loss_samples for name in values})
    return {
        "name": row.name,
        "producers": [p._asdict() for p in producers],
        "producer_count": count,
        # Columns, not objects: [time, value of names[0], value of names[1], ...] (null when absent).
        "loss": {"names": names, "points": [[t, *(values.get(n) for n in names)] for t, values in loss_samples]},
        "returns": runtime.returns.snapshot() if runtime is not None else [],
        "episodes": runtime.returns.episodes if runtime is not None else 0,
    }

"""The FastAPI application: the Agents Bar v1 API plus the streaming extension (``docs/protocol.md``).

:func:`create_app` opens the data directory (``state.open_state``), includes the routers of
``api/`` and installs the error handlers (``errors.py``): every client error is answered as
``{"detail": "<text>", ...}`` with a 4xx status; a 500 means a bug.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from agents_bar_stream.server.api import agents, auth, dashboard, policy, snapshots, stream
from agents_bar_stream.server.errors import install_error_handlers
from agents_bar_stream.server.learner import DEFAULT_SAVE_INTERVAL
from agents_bar_stream.server.limits import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_STEPS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TOKEN_TTL,
    MAX_AGENTS_PER_USER,
    MAX_UPLOADS_AT_ONCE,
)
from agents_bar_stream.server.metrics import MetricsMiddleware, ServerMetrics, metrics_endpoint
from agents_bar_stream.server.state import ServerState, Settings, open_state

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_STEPS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOKEN_TTL",
    "MAX_AGENTS_PER_USER",
    "MAX_UPLOADS_AT_ONCE",
    "create_app",
]


def create_app(
    data_dir: Path | None,
    *,
    store: str | None = None,
    replica_id: str = "",
    users: Sequence[tuple[str, str]] = (),
    token_ttl: float = DEFAULT_TOKEN_TTL,
    max_batch_steps: int = DEFAULT_MAX_BATCH_STEPS,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    synchronous: str = "FULL",
    learn: bool = True,
    save_interval: float = DEFAULT_SAVE_INTERVAL,
    streaming: bool = True,
    binary_steps: bool = True,
    metrics: str = "token",
    metrics_token: str | None = None,
) -> FastAPI:
    """The server application over ``data_dir`` (created when missing), or over the ``store`` URL.

    ``store`` ``postgresql://...`` makes this process one replica of a server whose whole state
    is in that database (``data_dir`` is then unused; ``replica_id`` names this process in
    ``GET /agents/{name}``'s ``learner``); ``sqlite:///path`` or None is the SQLite store.

    ``users`` are ``(name, password)`` accounts created, or given that password, at once.
    Learner threads start with the application's lifespan and stop (saving weights) with it.
    With ``streaming=False`` the server speaks Part 1 only, as an old Agents Bar would: the
    streaming and policy endpoints answer 404, so clients can be tested against an old server.
    With ``binary_steps=False`` ``/steps`` takes JSON only and ``/stream/info`` does not advertise
    Part 3's binary steps, as a server from before them.

    ``GET /metrics`` (Prometheus text, ``server/metrics.py``) names every account's agents, so by
    default (``metrics="token"``) it needs ``Authorization: Bearer <metrics_token>`` (a secret of
    the operator's, not a user's login token; without one it answers 403); ``"public"`` serves
    it to anyone who can reach the port (bind it to a private address), ``"off"`` not at all.
    """
    state = open_state(
        Path(data_dir) if data_dir is not None else None,
        store_url=store,
        replica_id=replica_id,
        users=users,
        token_ttl=token_ttl,
        settings=Settings(max_batch_steps, max_batch_bytes, max_body_bytes, binary_steps),
        synchronous=synchronous,
        learn=learn,
        save_interval=save_interval,
    )
    app = FastAPI(title="Agents Bar (agents-bar-stream)", lifespan=_lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    install_error_handlers(app)
    if metrics != "off":
        app.state.metrics = ServerMetrics(state, mode=metrics, token=metrics_token)
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
        app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    else:
        app.state.metrics = None
    # The order of the routes is the order of matching; none of these paths overlap across routers.
    app.include_router(auth.router)
    app.include_router(agents.router)
    app.include_router(snapshots.router)
    # Part 3's policy export goes with streaming: a Part 1 only server is an old Agents Bar, which
    # answers GET /agents/{name}/policy with 404 and knows no policy_version.
    app.state.serves_policy = streaming
    if streaming:
        app.include_router(stream.router)
        app.include_router(policy.router)
    dashboard.install(app)  # the page at / and its data route (api/dashboard.py)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.server
    # Load the agents (importing torch, restoring weights) beside serving, not before it: after
    # a restart, clients' queued steps are accepted at once, and an agent that is asked to act
    # before its turn is loaded on demand (Learners.get).
    loader = threading.Thread(target=state.learners.start_all, name="agents-bar-loader", daemon=True)
    loader.start()
    if state.placement is not None:  # replicas on a shared store: which of them learns each agent
        state.placement.start()
    try:
        yield
    finally:
        state.hashing.close()
        if state.placement is not None:
            await run_in_threadpool(state.placement.stop)
        await run_in_threadpool(state.learners.close)
        if state.placement is not None:  # after the learners' last saves, which its locks fence
            await run_in_threadpool(state.placement.close)
            shutil.rmtree(state.upload_dir, ignore_errors=True)
        await run_in_threadpool(loader.join, 30)
        state.store.close()

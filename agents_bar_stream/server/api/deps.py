"""FastAPI dependencies of the routes: the shared state, the current user and the current agent.

Each is an ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread,
a hop that would cost every request (``/steps``, ``/act``) more than the check itself.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from agents_bar_stream.protocol import is_valid_agent_name
from agents_bar_stream.server.errors import LOG_NAME, HTTPProblem
from agents_bar_stream.server.learner import AgentDeleted, AgentRuntime
from agents_bar_stream.server.state import ServerState
from agents_bar_stream.server.store import AgentRow

__all__ = ["CurrentAgent", "CurrentUser", "State", "agent_runtime", "current_agent", "current_user", "get_state"]

logger = logging.getLogger(LOG_NAME)


async def get_state(request: Request) -> ServerState:
    """The application's :class:`ServerState`."""
    return request.app.state.server


State = Annotated[ServerState, Depends(get_state)]


async def current_user(request: Request, state: State) -> str:
    """The user name of the request's bearer token; a 401 when it is missing, forged or expired."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPProblem(401, "not authenticated: send Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": "Bearer"})
    username = state.signer.verify(token.strip())
    if username is None:
        raise HTTPProblem(
            401,
            "the access token is invalid or has expired; log in again",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return username


CurrentUser = Annotated[str, Depends(current_user)]


async def current_agent(name: str, user: CurrentUser, state: State) -> AgentRow:
    """The agent ``name`` of the current user; a 404 when there is none (even if another user has one)."""
    if not is_valid_agent_name(name):
        row = None
    elif state.store.shared:
        # A round trip to PostgreSQL (maybe on another host, maybe waiting for a pooled
        # connection) must not hold the event loop; a local SQLite read is cheaper than the hop.
        row = await run_in_threadpool(state.store.get_agent, user, name)
    else:
        row = state.store.get_agent(user, name)
    if row is None:
        raise HTTPProblem(404, f"agent {name!r} not found")
    return row


CurrentAgent = Annotated[AgentRow, Depends(current_agent)]


async def agent_runtime(state: ServerState, row: AgentRow) -> AgentRuntime:
    """The agent's runtime, built on a worker thread if it is not loaded yet.

    Not a dependency: routes ask for it only after checking their input, so that a request that
    is refused anyway never waits for an agent to load.
    """
    # Building an agent (torch, weights from disk) takes a while: never on the event loop.
    runtime = state.learners.peek(row.id)
    if runtime is not None:
        return runtime
    try:
        return await run_in_threadpool(state.learners.get, row)
    except AgentDeleted:  # deleted while it was being built
        raise HTTPProblem(404, f"agent {row.name!r} not found") from None
    except RuntimeError as exc:  # shutting down
        raise HTTPProblem(503, str(exc), headers={"Retry-After": "1"}) from None
    except Exception as exc:  # the agent cannot be built (e.g. the library refuses its config)
        logger.exception("agent %s cannot be loaded", row.id)
        raise HTTPProblem(503, f"agent {row.name!r} cannot be loaded: {exc}") from None

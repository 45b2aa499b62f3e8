"""The agents of the current user (Part 1): list, create, get, delete, act, step, loss, and the log.

``GET /agents/{name}/steps`` (the accepted log, in order) is our own addition, for inspection;
it is served whether the server streams or not.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from agents_bar_stream.exceptions import InvalidStepError
from agents_bar_stream.protocol import (
    API_PREFIX,
    SUPPORTED_MODELS,
    is_discrete,
    is_valid_agent_name,
    validate_step,
)
from agents_bar_stream.server.api.binary_steps import STEPS_MEDIA_TYPE
from agents_bar_stream.server.api.deps import CurrentAgent, CurrentUser, State, agent_runtime
from agents_bar_stream.server.api.inputs import check_obs, int_query, json_body_limit, parse_json, read_body
from agents_bar_stream.server.arrays import binary_page, json_ready
from agents_bar_stream.server.errors import LOG_NAME, HTTPProblem, json_response
from agents_bar_stream.server.learner import (
    AgentBusy,
    AgentFailure,
    AgentRuntime,
    ConfigError,
    Learners,
    validate_config,
)
from agents_bar_stream.server.limits import MAX_AGENTS_PER_USER, MAX_LOG_NUMBERS, MAX_LOG_PAGE, MAX_SMALL_BODY
from agents_bar_stream.server.policy_export import PolicyExportError
from agents_bar_stream.server.store import AgentExists, AgentRow, LogEntry, TooManyAgents

__all__ = ["router"]

logger = logging.getLogger(LOG_NAME)

router = APIRouter(prefix=API_PREFIX)

#: Seconds GET /agents/{name} waits for a learning step to hash new weights before answering
#: policy_version null (the document is polled; it must not take as long as act may).
AGENT_VERSION_LOCK_TIMEOUT = 0.25

# Keys the published client puts in an agent's config that are not hyperparameters: taken out
# before the hyperparameters are checked, and never stored (a password or a token in config would
# be echoed by every GET /agents). description becomes the agent's description when the top-level
# one is absent; agent_model repeats "model".
_CLIENT_CONFIG_FIELDS = ("description", "agent_model", "username", "password", "access_token")


def _agent_json(row: AgentRow, learners: Learners) -> dict[str, Any]:
    # progress: steps_learned, learn_errors and learner (the replica that learns the agent, or null)
    progress = learners.progress(row.id)
    return {
        "name": row.name,
        "model": row.model,
        "description": row.description,
        "config": row.config,
        "is_active": row.is_active,
        "steps_received": row.steps_received,
        **progress,
        "created_at": row.created_at,
    }


# Both /agents/ and /agents are answered: the published client uses the trailing slash.
@router.get("/agents/")
@router.get("/agents", include_in_schema=False)
async def list_agents(user: CurrentUser, state: State) -> Response:
    rows = state.store.list_agents(user)
    return json_response([_agent_json(r, state.learners) for r in rows])


@router.post("/agents/")
@router.post("/agents", include_in_schema=False)
async def create_agent(request: Request, user: CurrentUser, state: State) -> Response:
    doc = parse_json(await read_body(request, MAX_SMALL_BODY))
    name, model, description, config, is_active = _new_agent(doc)
    try:
        row = await run_in_threadpool(
            lambda: state.store.create_agent(
                owner=user, name=name, model=model, description=description, config=config, is_active=is_active,
                max_per_owner=MAX_AGENTS_PER_USER,
            )
        )
    except AgentExists:
        raise HTTPProblem(409, f"an agent named {name!r} already exists") from None
    except TooManyAgents:
        raise HTTPProblem(
            422, f"this account has {MAX_AGENTS_PER_USER} agents, the most it may have; delete one first"
        ) from None
    try:
        await run_in_threadpool(state.learners.get, row)
    except Exception as exc:
        # The hyperparameters passed our checks but the library refused them: undo the create.
        logger.warning("agent %s: cannot build %s", row.id, model, exc_info=True)
        await run_in_threadpool(state.store.delete_agent, row.id)
        await run_in_threadpool(state.learners.remove, row.id)
        raise HTTPProblem(422, f"the {model} agent cannot be built with this config: {exc}") from None
    return json_response(_agent_json(row, state.learners), 201)


def _new_agent(doc: Any) -> tuple[str, str, str | None, dict[str, Any], bool]:
    """Name, model, description, checked config and is_active of a create body; a 422 at the first bad one."""
    if not isinstance(doc, dict):
        raise HTTPProblem(422, "the body must be a JSON object with name, model and config")
    name = doc.get("name")
    if not is_valid_agent_name(name):
        raise HTTPProblem(422, "name must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit")
    model = doc.get("model")
    if not isinstance(model, str) or model.lower() not in SUPPORTED_MODELS:
        raise HTTPProblem(422, f"unknown model {model!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    model = model.lower()
    config_doc = doc.get("config")
    description = doc.get("description")
    if isinstance(config_doc, dict):
        # The published client (0.4.2) sends every RemoteAgent(...) keyword inside config,
        # hyperparameters or not: RemoteAgent(client, name, description="...") arrives as
        # config.description, and username/password/access_token when given that way.
        config_doc = dict(config_doc)
        in_config = {k: config_doc.pop(k) for k in _CLIENT_CONFIG_FIELDS if k in config_doc}
        if description is None:
            description = in_config.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 10_000):
        raise HTTPProblem(422, "description must be a string of at most 10000 characters, or null")
    is_active = doc.get("is_active", True)
    if not isinstance(is_active, bool):
        raise HTTPProblem(422, "is_active must be true or false")
    try:
        config = validate_config(model, config_doc)
    except ConfigError as exc:
        raise HTTPProblem(422, str(exc)) from None
    return name, model, description, config, is_active


@router.get("/agents/{name}")
async def get_agent(request: Request, row: CurrentAgent, state: State) -> Response:
    doc = _agent_json(row, state.learners)
    if not getattr(request.app.state, "serves_policy", False):
        return json_response(doc)
    runtime = state.learners.peek(row.id)
    doc["policy_version"] = await run_in_threadpool(_policy_version, runtime) if runtime is not None else None
    doc["policy_lag"] = runtime.policy_lag() if runtime is not None else None
    return json_response(doc)


def _policy_version(runtime: AgentRuntime) -> str | None:
    """The agent's current policy version; None when it cannot be had now (see docs/protocol.md)."""
    try:
        return runtime.current_policy_version(timeout=AGENT_VERSION_LOCK_TIMEOUT)
    except AgentBusy:
        return None  # a learning step holds the agent: GET /agents/{name} does not fail for that
    except PolicyExportError as exc:
        logger.warning("agent %s: no policy version: %s", runtime.id, exc)
        return None


@router.delete("/agents/{name}")
async def delete_agent(name: str, row: CurrentAgent, state: State) -> Response:
    await run_in_threadpool(state.store.delete_agent, row.id)
    await run_in_threadpool(state.learners.remove, row.id)
    return json_response({"detail": f"agent {name!r} deleted"}, 202)


@router.post("/agents/{name}/act")
async def act(request: Request, row: CurrentAgent, state: State) -> Response:
    raw_noise = request.query_params.get("noise", "0")
    try:
        noise = float(raw_noise)
    except ValueError:
        raise HTTPProblem(422, f"noise must be a number, got {raw_noise!r:.40}") from None
    if not (math.isfinite(noise) and noise >= 0):
        raise HTTPProblem(422, "noise must be a finite number >= 0")
    obs_size = row.config["obs_size"]
    obs = check_obs(parse_json(await read_body(request, json_body_limit(obs_size))), obs_size)
    runtime = await agent_runtime(state, row)
    try:
        action = await run_in_threadpool(runtime.act, obs, noise)
    except AgentFailure as exc:
        logger.warning("agent %s: %s", row.id, exc, exc_info=True)
        raise HTTPProblem(503, str(exc), headers={"Retry-After": "1"}) from None
    return json_response({"action": action})


@router.post("/agents/{name}/step")
async def step(name: str, request: Request, row: CurrentAgent, state: State) -> Response:
    doc = parse_json(await read_body(request, json_body_limit(2 * row.config["obs_size"])))
    if not isinstance(doc, dict) or "step_data" not in doc:
        raise HTTPProblem(422, 'the body must be {"step_data": step}')
    data = doc["step_data"]
    try:
        validate_step(data, obs_size=row.config["obs_size"], action_size=row.config["action_size"],
                      discrete=is_discrete(row.model))
    except InvalidStepError as exc:
        raise HTTPProblem(422, f"invalid step: {exc}") from None
    try:
        position = await run_in_threadpool(state.store.append_step, row.id, data)
    except LookupError:
        raise HTTPProblem(404, f"agent {name!r} not found") from None
    if request.app.state.metrics is not None:
        request.app.state.metrics.steps(row.owner, row.name, 1, 0)
    runtime = state.learners.peek(row.id)
    if runtime is not None:
        runtime.notify()
    return json_response({"detail": "step accepted", "position": position})


@router.get("/agents/{name}/loss")
async def loss(row: CurrentAgent, state: State) -> Response:
    runtime = await agent_runtime(state, row)
    try:
        return json_response(await run_in_threadpool(runtime.loss))
    except AgentFailure as exc:
        raise HTTPProblem(503, str(exc), headers={"Retry-After": "1"}) from None


@router.get("/agents/{name}/steps")
async def get_steps(request: Request, row: CurrentAgent, state: State) -> Response:
    start = int_query(request, "start", 0, 0, 2**62)
    limit = int_query(request, "limit", 1000, 1, MAX_LOG_PAGE)

    # A page holds at most MAX_LOG_NUMBERS numbers (camera-sized steps: fewer steps than asked,
    # which the protocol allows; `next` goes on from there), so that one GET cannot take the
    # server's memory.
    limit = min(limit, max(1, MAX_LOG_NUMBERS // _numbers_per_step(row)))

    # Accept: application/x-agents-bar-steps asks for the page in the binary encoding (arrays as
    # their bytes, docs/protocol.md); anything else gets JSON, as always.
    binary = STEPS_MEDIA_TYPE in (request.headers.get("accept") or "").lower()

    def page() -> bytes:
        entries = state.store.read_entries(row.id, start, limit, arrays=True)
        total = state.store.steps_received(row.id)
        end = start + len(entries)
        nxt = end if end < total else None
        if binary:
            return binary_page([_log_entry(e, flat=False) for e in entries], nxt)
        steps = [_log_entry(e) for e in entries]
        # Arrays (steps of the binary encoding) are written by orjson itself as flat lists of the
        # same values: see arrays.json_ready.
        return orjson.dumps({"steps": steps, "next": nxt}, option=orjson.OPT_SERIALIZE_NUMPY)

    return Response(await run_in_threadpool(page), media_type=STEPS_MEDIA_TYPE if binary else "application/json")


def _numbers_per_step(row: AgentRow) -> int:
    return 2 * row.config["obs_size"] + row.config["action_size"] + 2


def _log_entry(entry: LogEntry, *, flat: bool = True) -> dict[str, Any]:
    out = {"producer_id": entry.producer_id, "seq": entry.seq, "step": json_ready(entry.step) if flat else entry.step}
    if entry.policy_version is not None:
        out["policy_version"] = entry.policy_version
    return out

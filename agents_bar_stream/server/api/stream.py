"""Part 2 of the protocol, the streaming extension: ``/stream/info``, batched steps and producers.

Included only when the server streams: an old, Part 1 only, Agents Bar answers these with 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from agents_bar_stream.exceptions import InvalidStepError
from agents_bar_stream.protocol import (
    API_PREFIX,
    PROTOCOL_VERSION,
    is_discrete,
    is_valid_producer_id,
    validate_step,
)
from agents_bar_stream.server.api.binary_steps import CONTENT_ENCODINGS, STEP_ENCODINGS, decode_body
from agents_bar_stream.server.api.deps import CurrentAgent, State
from agents_bar_stream.server.api.inputs import read_body
from agents_bar_stream.server.arrays import validate_step_arrays
from agents_bar_stream.server.errors import HTTPProblem, json_response
from agents_bar_stream.server.state import ServerState
from agents_bar_stream.server.store import AgentRow, SequenceGap

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX)

_BAD_PRODUCER_ID = "producer_id must be 1 to 64 characters of [A-Za-z0-9_-]"


@router.get("/stream/info")
async def stream_info(state: State) -> Response:
    # step_encodings / content_encodings: the compact binary steps of docs/protocol.md (issue 12);
    # a client that does not see them sends JSON, which is always taken.
    info: dict = {"protocol": PROTOCOL_VERSION, **state.settings.batch_limits()}
    if state.settings.binary_steps:
        info.update(step_encodings=STEP_ENCODINGS, content_encodings=CONTENT_ENCODINGS)
    return json_response(info)


@router.post("/agents/{name}/steps")
async def post_steps(request: Request, row: CurrentAgent, state: State) -> Response:
    limits = state.settings.batch_limits()
    body = await read_body(request, state.settings.max_batch_bytes, too_large=limits)
    headers = request.headers
    if not state.settings.binary_steps and (headers.get("content-encoding")
                                            or (headers.get("content-type") or "").startswith(STEP_ENCODINGS[0])):
        raise HTTPProblem(415, "this server takes JSON steps only (serve --json-steps-only)")
    result = await run_in_threadpool(_apply_steps, state, row, body, headers.get("content-type"),
                                     headers.get("content-encoding"))
    runtime = state.learners.peek(row.id)
    if runtime is not None and result["applied"]:
        runtime.notify()
    return json_response(result)


@router.get("/agents/{name}/producers/{producer_id}")
async def get_producer(producer_id: str, row: CurrentAgent, state: State) -> Response:
    if not is_valid_producer_id(producer_id):
        raise HTTPProblem(422, _BAD_PRODUCER_ID)
    return json_response({"acked_seq": state.store.acked_seq(row.id, producer_id)})


def _apply_steps(state: ServerState, row: AgentRow, body: bytes, content_type: str | None,
                 content_encoding: str | None) -> dict[str, int]:
    """Decode, check and apply one ``POST /steps`` body, in the order of the protocol's table.

    Decoding (zstd, the binary encoding) runs here, on a worker thread, not on the event loop.
    """
    limits = state.settings.batch_limits()
    doc, binary = decode_body(body, content_type, content_encoding, state.settings.max_batch_bytes, limits,
                              state.settings.max_batch_steps)
    producer_id, first_seq, steps = _envelope(state, doc)
    acked = state.store.acked_seq(row.id, producer_id)
    if first_seq > acked + 1:
        raise HTTPProblem(409, f"sequence gap: first_seq is {first_seq}, expected {acked + 1}", expected_seq=acked + 1)
    obs_size, action_size, discrete = row.config["obs_size"], row.config["action_size"], is_discrete(row.model)
    for i, step in enumerate(steps):
        try:
            if binary:  # a JSON body is checked exactly as before this encoding existed
                validate_step_arrays(step, obs_size=obs_size, action_size=action_size, discrete=discrete,
                                     obs_shape=row.config.get("obs_shape"), obs_dtype=row.config.get("obs_dtype"))
            else:
                validate_step(step, obs_size=obs_size, action_size=action_size, discrete=discrete)
        except InvalidStepError as exc:
            raise HTTPProblem(422, f"step {i} (seq {first_seq + i}) is invalid: {exc}", index=i) from None
    try:
        acked_seq, applied, duplicates = state.store.append_batch(row.id, producer_id, first_seq, steps)
    except SequenceGap as gap:  # another request of the same producer got in first
        raise HTTPProblem(
            409, f"sequence gap: first_seq is {first_seq}, expected {gap.expected_seq}", expected_seq=gap.expected_seq
        ) from None
    except LookupError:
        raise HTTPProblem(404, f"agent {row.name!r} not found") from None
    return {"acked_seq": acked_seq, "applied": applied, "duplicates": duplicates}


def _envelope(state: ServerState, doc: Any) -> tuple[str, int, list[Any]]:
    """``producer_id``, ``first_seq`` and ``steps`` of a decoded batch; a 413 or 422 for a bad envelope.

    The step count is checked before the other fields: a batch that is too big is a 413 (split
    it) even when something else is wrong with it too.
    """
    if not isinstance(doc, dict):
        raise HTTPProblem(422, 'the body must be {"producer_id", "first_seq", "steps"}')
    steps = doc.get("steps")
    most = state.settings.max_batch_steps
    if type(steps) is list and len(steps) > most:
        raise HTTPProblem(413, f"{len(steps)} steps is over the limit of {most} per batch",
                          **state.settings.batch_limits())
    producer_id = doc.get("producer_id")
    if not is_valid_producer_id(producer_id):
        raise HTTPProblem(422, _BAD_PRODUCER_ID)
    first_seq = doc.get("first_seq")
    if type(first_seq) is not int or first_seq < 0:
        raise HTTPProblem(422, "first_seq must be an integer >= 0")
    if type(steps) is not list or not steps:
        raise HTTPProblem(422, "steps must be a non-empty list")
    return producer_id, first_seq, steps

"""``GET /agents/{name}/policy``: the agent's current greedy policy as an ONNX model (issue 11).

The answer carries ``ETag: "<policy_version>"``; a request whose ``If-None-Match`` names the
current version gets ``304`` without a body. The model is exported once per version, on a worker
thread, from a copy of the networks (``AgentRuntime.policy_export``): the agent's lock is held
only for the copy. ``docs/protocol.md`` (Part 3) and ``docs/policy_export.md`` hold the format.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from agents_bar_stream.protocol import API_PREFIX
from agents_bar_stream.server.api.deps import CurrentAgent, State, agent_runtime
from agents_bar_stream.server.errors import LOG_NAME, HTTPProblem
from agents_bar_stream.server.learner import AgentBusy
from agents_bar_stream.server.policy_export import PolicyExportError

__all__ = ["POLICY_MEDIA_TYPE", "router"]

logger = logging.getLogger(LOG_NAME)

router = APIRouter(prefix=API_PREFIX)

POLICY_MEDIA_TYPE = "application/onnx"


def _entity_tags(header: str | None) -> set[str]:
    """The entity tags of an ``If-None-Match`` header, without quotes and weak prefixes (``*`` kept)."""
    if not header:
        return set()
    tags = set()
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.add(tag.strip('"'))
    tags.discard("")
    return tags


def _headers(version: str) -> dict[str, str]:
    # no-cache: a cache may keep the model but must ask (If-None-Match) before using it again.
    return {"ETag": f'"{version}"', "Cache-Control": "private, no-cache"}


@router.get("/agents/{name}/policy")
async def get_policy(request: Request, row: CurrentAgent, state: State) -> Response:
    runtime = await agent_runtime(state, row)
    tags = _entity_tags(request.headers.get("if-none-match"))
    try:
        if tags:
            version = await run_in_threadpool(runtime.current_policy_version)
            if version in tags or "*" in tags:
                return Response(status_code=304, headers=_headers(version))
        export = await run_in_threadpool(runtime.policy_export)
    except AgentBusy as exc:
        raise HTTPProblem(503, str(exc), headers={"Retry-After": "1"}) from None
    except PolicyExportError as exc:
        # Weights that are not finite, or a network the exporter does not know: nothing to serve now.
        logger.warning("agent %s: policy export failed: %s", row.id, exc)
        raise HTTPProblem(503, f"the {row.model} policy cannot be exported now: {exc}",
                          headers={"Retry-After": "5"}) from None
    return Response(export.onnx_bytes, media_type=POLICY_MEDIA_TYPE, headers=_headers(export.version))

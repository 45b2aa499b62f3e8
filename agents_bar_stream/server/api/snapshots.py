"""``GET`` and ``POST /snapshots/{name}``: an agent's network, config and recent steps as one document.

An upload is spooled to a file and checked by a child process (``uploads.py``) before the server
reads the network bytes it carries: its size never holds the event loop or the GIL.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from agents_bar_stream.protocol import API_PREFIX, is_discrete
from agents_bar_stream.server.api.deps import CurrentAgent, State, agent_runtime
from agents_bar_stream.server.api.inputs import spool_body
from agents_bar_stream.server.errors import LOG_NAME, HTTPProblem, json_response
from agents_bar_stream.server.learner import AgentFailure, NetworkFormatError
from agents_bar_stream.server.limits import MAX_LOG_NUMBERS, SNAPSHOT_BUFFER_STEPS, UPLOAD_CHECK_TIMEOUT
from agents_bar_stream.server.store import AgentRow
from agents_bar_stream.server.uploads import BUFFER_FORMAT

__all__ = ["router"]

logger = logging.getLogger(LOG_NAME)

router = APIRouter(prefix=API_PREFIX)


@router.get("/snapshots/{name}")
async def get_snapshot(row: CurrentAgent, state: State) -> Response:
    runtime = await agent_runtime(state, row)
    store = state.store

    def build() -> dict[str, Any]:
        network = runtime.network_bytes()
        total = store.steps_received(row.id)
        # Camera-sized steps: fewer of them, so that the document stays within MAX_LOG_NUMBERS numbers.
        per_step = 2 * row.config["obs_size"] + row.config["action_size"] + 2
        count = min(SNAPSHOT_BUFFER_STEPS, max(1, MAX_LOG_NUMBERS // per_step))
        start = max(total - count, 0)
        steps = [s for _p, _q, s in store.read_log(row.id, start, count)]
        buffer = orjson.dumps({"format": BUFFER_FORMAT, "steps": steps})
        config = orjson.dumps({"model": row.model, **row.config})
        return {
            "model": row.model,
            "obs_size": row.config["obs_size"],
            "action_size": row.config["action_size"],
            "encoded_config": base64.b64encode(config).decode("ascii"),
            "encoded_network": base64.b64encode(network).decode("ascii"),
            "encoded_buffer": base64.b64encode(buffer).decode("ascii"),
        }

    try:
        return json_response(await run_in_threadpool(build))
    except AgentFailure as exc:
        raise HTTPProblem(503, str(exc), headers={"Retry-After": "1"}) from None


@router.post("/snapshots/{name}")
async def post_snapshot(request: Request, row: CurrentAgent, state: State) -> Response:
    # The body goes to a file as it arrives and is parsed by a child process (uploads.py):
    # its size never holds the event loop or the GIL, and the child's memory goes with it.
    # Two at a time; a third waits (not reading, so its client is held back by TCP).
    async with state.upload_slots:
        with tempfile.TemporaryDirectory(dir=state.upload_dir) as tmp:
            body_path, network_path = os.path.join(tmp, "body"), os.path.join(tmp, "network")
            await spool_body(request, state.settings.max_body_bytes, body_path)
            result = await _check_in_child(body_path, network_path, row)
            network = await run_in_threadpool(Path(network_path).read_bytes) if result.get("network") else b""
    runtime = await agent_runtime(state, row)
    if network:
        try:
            await run_in_threadpool(runtime.load_network_bytes, network)
        except NetworkFormatError as exc:
            raise HTTPProblem(422, str(exc)) from None
        except AgentFailure as exc:
            raise HTTPProblem(503, str(exc), headers={"Retry-After": "1"}) from None
    return json_response({"detail": "snapshot loaded"})


async def _check_in_child(body_path: str, network_path: str, row: AgentRow) -> dict[str, Any]:
    """Run uploads.py on a spooled snapshot body; raises HTTPProblem for a refused one."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents_bar_stream.server.uploads", body_path, network_path, row.model,
        str(row.config["obs_size"]), str(row.config["action_size"]), "1" if is_discrete(row.model) else "0",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=UPLOAD_CHECK_TIMEOUT)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise HTTPProblem(503, "the snapshot could not be checked in time; try again later",
                          headers={"Retry-After": "5"}) from None
    try:
        result = orjson.loads(out.splitlines()[-1]) if proc.returncode == 0 and out else None
    except orjson.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        logger.error("snapshot check exited with %s: %s", proc.returncode, err.decode(errors="replace")[-2000:])
        raise HTTPProblem(503, "the snapshot could not be checked now; try again later", headers={"Retry-After": "5"})
    if "status" in result:
        raise HTTPProblem(int(result["status"]), str(result["detail"]), **dict(result.get("extra") or {}))
    return result

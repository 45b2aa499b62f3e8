"""Reading what a request carries: bodies (with their size limits), forms, JSON and query integers.

Bodies of the hot paths (``/steps``, ``/act``) are read raw and parsed with orjson rather than
through pydantic models: for a batch of 2000 steps, model validation costs more than everything
else together.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from agents_bar_stream.exceptions import InvalidStepError
from agents_bar_stream.protocol import check_numbers
from agents_bar_stream.server.errors import HTTPProblem
from agents_bar_stream.server.limits import DRAIN_LIMIT, MAX_JSON_NUMBER_BYTES, MAX_SMALL_BODY

__all__ = ["check_obs", "form_fields", "int_query", "json_body_limit", "parse_json", "read_body", "spool_body"]


def json_body_limit(numbers: int) -> int:
    """The body limit of a small request carrying ``numbers`` JSON numbers (act, the legacy step).

    MAX_SMALL_BODY, plus room for the numbers of a camera-sized observation written in full
    float64 precision: an agent of 28,224 numbers must be able to act through JSON.
    """
    return MAX_SMALL_BODY + numbers * MAX_JSON_NUMBER_BYTES


def _too_large(limit: int, extra: dict[str, Any] | None = None) -> HTTPProblem:
    return HTTPProblem(413, f"request body is over the limit of {limit} bytes", **(extra or {}))


async def read_body(request: Request, limit: int, *, too_large: dict[str, Any] | None = None) -> bytes:
    """The raw body, or a 413 (with the fields of ``too_large``) when it is over ``limit`` bytes.

    The limit is checked against Content-Length first and again as the body streams in.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                await _drain(request)
                raise _too_large(limit, too_large)
        except ValueError:
            raise HTTPProblem(400, "bad Content-Length header") from None
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                await _drain(request)
                raise _too_large(limit, too_large)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to read an answer; a 400 keeps it out of the error log as a server fault.
        raise HTTPProblem(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def spool_body(request: Request, limit: int, path: str) -> None:
    """Write the body to ``path`` (mode 0600) as it arrives; a 413 when it is over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise HTTPProblem(400, "bad Content-Length header") from None
        if too_big:
            await _drain(request)
            raise _too_large(limit)
    size = 0
    # Writes of the server's 64 KiB chunks go to the page cache in microseconds: on the loop.
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    await _drain(request)
                    raise _too_large(limit)
                fh.write(chunk)
        except ClientDisconnect:
            raise HTTPProblem(400, "the client disconnected before sending the whole body") from None


async def _drain(request: Request) -> None:
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                return
    except Exception:  # noqa: BLE001 - the client went away or the stream was consumed: nothing to drain
        return


async def form_fields(request: Request, body: bytes) -> dict[str, str]:
    """The text fields of a multipart form whose body was already read (by :func:`read_body`)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=0, max_fields=16)
    except Exception as exc:  # noqa: BLE001 - python-multipart and starlette raise several kinds for a bad form
        raise HTTPProblem(422, f"the multipart form cannot be read: {exc}") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; a 422 when it is empty or not JSON."""
    if not body:
        raise HTTPProblem(422, "the request body is empty; a JSON value is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(422, f"the request body is not valid JSON: {exc}") from None


def check_obs(value: Any, size: int) -> list:
    """``value`` if it is an observation of ``size`` numbers (the rule of the steps); a 422 otherwise."""
    try:
        check_numbers("observation", value, size)
    except InvalidStepError as exc:
        raise HTTPProblem(422, str(exc)) from None
    return value


def int_query(request: Request, key: str, default: int, low: int, high: int) -> int:
    """The integer query parameter ``key`` (``default`` when absent); a 422 unless ``low <= value <= high``."""
    raw = request.query_params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(422, f"{key} must be an integer, got {raw!r:.40}") from None
    if not low <= value <= high:
        raise HTTPProblem(422, f"{key} must be between {low} and {high}")
    return value

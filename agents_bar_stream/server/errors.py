"""The server's HTTP errors, and the one place that turns exceptions into JSON answers.

:class:`HTTPProblem` is raised anywhere below a route (the routers, their dependencies, helpers
running on worker threads) and becomes ``{"detail": ..., **extra}`` with its status. It is not
the client's :class:`agents_bar_stream.exceptions.APIError`, which is what a *client* raises
when it receives such an answer. :func:`install_error_handlers` also maps request validation
errors to ``422 {"detail"}``, an unknown route to starlette's status with ``{"detail"}``, a
failing disk or database to ``503`` and anything else to ``500`` (a bug, logged with its traceback).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from agents_bar_stream.server.store import StoreUnavailable

__all__ = ["LOG_NAME", "HTTPProblem", "install_error_handlers", "json_response"]

#: The logger of every route and error handler, whichever module of ``api/`` it is in: the
#: application's name, so that one log filter (``agents_bar_stream.server.app``) sees every request.
LOG_NAME = "agents_bar_stream.server.app"
logger = logging.getLogger(LOG_NAME)


class HTTPProblem(Exception):
    """An answer other than success: ``status``, ``{"detail": detail, **extra}`` and ``headers``."""

    def __init__(self, status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``data`` as JSON, encoded by orjson (several times faster than the default encoder)."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _validation_text(errors: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


async def _problem(request: Request, exc: HTTPProblem) -> Response:
    return json_response({"detail": exc.detail, **exc.extra}, exc.status, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return json_response({"detail": _validation_text(exc.errors())}, 422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return json_response({"detail": str(exc.detail)}, exc.status_code, exc.headers)


async def _storage_error(request: Request, exc: sqlite3.Error | StoreUnavailable) -> Response:
    # The disk is full or failing: nothing was applied (every write is one transaction), and
    # the client's data is safe with it. 503 tells it to come back later, as the protocol says.
    logger.error("storage error on %s %s: %s", request.method, request.url.path, exc)
    return json_response({"detail": f"the server cannot write its storage now ({exc}); try again later"}, 503,
                         {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response({"detail": "internal server error"}, 500)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as ``{"detail": ...}`` (see the module docstring)."""
    app.add_exception_handler(HTTPProblem, _problem)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sqlite3.Error, _storage_error)
    app.add_exception_handler(StoreUnavailable, _storage_error)  # PostgreSQL unreachable, full, restarting
    app.add_exception_handler(Exception, _unexpected)

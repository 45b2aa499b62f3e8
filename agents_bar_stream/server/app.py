"""The FastAPI application: the Agents Bar v1 API plus the streaming extension (``docs/protocol.md``).

Bodies of the hot paths (``/steps``, ``/act``) are read raw and parsed with orjson rather than
through pydantic models: for a batch of 2000 steps, model validation costs more than everything
else together. Every client error is answered as ``{"detail": "<text>", ...}`` with a 4xx status;
a 500 means a bug in this module.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from agents_bar_stream.protocol import (
    API_PREFIX,
    PROTOCOL_VERSION,
    SUPPORTED_MODELS,
    StepInvalid,
    check_numbers,
    is_discrete,
    is_valid_agent_name,
    is_valid_producer_id,
    validate_step,
)
from agents_bar_stream.server import learner as learner_mod
from agents_bar_stream.server.learner import (
    AgentDeleted,
    AgentFailure,
    ConfigError,
    Learners,
    NetworkFormatError,
    validate_config,
)
from agents_bar_stream.server.security import (
    LoginLimiter,
    TokenSigner,
    hash_password,
    load_or_create_secret,
    secure_data_dir,
    verify_password,
)
from agents_bar_stream.server.store import AgentExists, AgentRow, SequenceGap, Store, TooManyAgents
from agents_bar_stream.server.uploads import BUFFER_FORMAT

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_STEPS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOKEN_TTL",
    "create_app",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_STEPS = 10_000
DEFAULT_MAX_BATCH_BYTES = 8 * 2**20  # 8 MiB
DEFAULT_MAX_BODY_BYTES = 64 * 2**20  # any other body (snapshots are the big ones)
DEFAULT_TOKEN_TTL = 24 * 3600.0  # seconds
MAX_SMALL_BODY = 1 * 2**20  # login, create, act, step
MAX_LOG_PAGE = 10_000
MAX_AGENTS_PER_USER = 100  # each agent holds a network, a replay buffer and a learner thread
SNAPSHOT_BUFFER_STEPS = 1000  # the most recent steps a snapshot carries as its buffer
# Keys the published client puts in an agent's config that are not hyperparameters: taken out
# before the hyperparameters are checked, and never stored (a password or a token in config would
# be echoed by every GET /agents). description becomes the agent's description when the top-level
# one is absent; agent_model repeats "model".
_CLIENT_CONFIG_FIELDS = ("description", "agent_model", "username", "password", "access_token")
# Password hashing (scrypt: ~16 MiB and tens of ms of a core each) runs on its own thread, one
# hash at a time, with at most this many logins queued for it: a flood of logins (issue 9: 30-40
# threads grew the server to 1.2 GiB, one scrypt buffer per request thread, and took the CPU
# from ingestion) costs one core and one buffer at most. The rest are answered 429 at once.
# Snapshot uploads spooled and checked at once (each check is a child process, uploads.py), and
# how long a check may take.
MAX_UPLOADS_AT_ONCE = 2
UPLOAD_CHECK_TIMEOUT = 120.0
LOGIN_HASH_WORKERS = 1
MAX_LOGINS_WAITING = 16
# Bodies over the limit are still read (and dropped) up to this many bytes before answering 413:
# a client that is still sending when the server closes the connection sees a reset instead of
# the 413 that tells it to split the batch.
_DRAIN_LIMIT = 256 * 2**20


class APIError(Exception):
    """Raised anywhere below a route; becomes ``{"detail": ..., **extra}`` with ``status``."""

    def __init__(self, status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _validation_text(errors: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class _HashingPool:
    """A small thread pool for password hashing, with a count of the calls waiting for it."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="agents-bar-login")
        self.waiting = 0  # changed on the event loop only

    async def run(self, fn, *args):
        self.waiting += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(fn, *args))
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Settings:
    max_batch_steps: int
    max_batch_bytes: int
    max_body_bytes: int


class _State:
    def __init__(self, store: Store, signer: TokenSigner, learners: Learners, settings: _Settings) -> None:
        self.store = store
        self.signer = signer
        self.learners = learners
        self.settings = settings


# -- request helpers -----------------------------------------------------------------------------


async def _read_body(request: Request, limit: int, *, too_large: dict[str, Any] | None = None) -> bytes:
    """The raw body, or a 413 when it is over ``limit`` bytes (by Content-Length or as it streams)."""

    def fail() -> APIError:
        return APIError(413, f"request body is over the limit of {limit} bytes", **(too_large or {}))

    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                await _drain(request)
                raise fail()
        except ValueError:
            raise APIError(400, "bad Content-Length header") from None
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                await _drain(request)
                raise fail()
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to read an answer; a 400 keeps it out of the error log as a server fault.
        raise APIError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def _spool_body(request: Request, limit: int, path: str) -> None:
    """Write the body to ``path`` (mode 0600) as it arrives; a 413 when it is over ``limit`` bytes."""

    def fail() -> APIError:
        return APIError(413, f"request body is over the limit of {limit} bytes")

    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise APIError(400, "bad Content-Length header") from None
        if too_big:
            await _drain(request)
            raise fail()
    size = 0
    # Writes of the server's 64 KiB chunks go to the page cache in microseconds: on the loop.
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    await _drain(request)
                    raise fail()
                fh.write(chunk)
        except ClientDisconnect:
            raise APIError(400, "the client disconnected before sending the whole body") from None


async def _check_snapshot_in_child(body_path: str, network_path: str, row: AgentRow) -> dict[str, Any]:
    """Run uploads.py on a spooled snapshot body; raises APIError for a refused one."""
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
        raise APIError(503, "the snapshot could not be checked in time; try again later", headers={"Retry-After": "5"}) from None
    try:
        result = orjson.loads(out.splitlines()[-1]) if proc.returncode == 0 and out else None
    except orjson.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        logger.error("snapshot check exited with %s: %s", proc.returncode, err.decode(errors="replace")[-2000:])
        raise APIError(503, "the snapshot could not be checked now; try again later", headers={"Retry-After": "5"})
    if "status" in result:
        raise APIError(int(result["status"]), str(result["detail"]), **dict(result.get("extra") or {}))
    return result


async def _form_fields(request: Request, body: bytes) -> dict[str, str]:
    """The text fields of a multipart form whose body was already read (by _read_body)."""
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
        raise APIError(422, f"the multipart form cannot be read: {exc}") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _drain(request: Request) -> None:
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > _DRAIN_LIMIT:
                return
    except Exception:  # noqa: BLE001 - the client went away or the stream was consumed: nothing to drain
        return


def _parse_json(body: bytes) -> Any:
    if not body:
        raise APIError(422, "the request body is empty; a JSON value is expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(422, f"the request body is not valid JSON: {exc}") from None


def _check_obs(value: Any, size: int) -> list:
    try:
        check_numbers("observation", value, size)  # the same rule as for the steps
    except StepInvalid as exc:
        raise APIError(422, str(exc)) from None
    return value


def _agent_json(row: AgentRow, learners: Learners, steps_received: int | None = None) -> dict[str, Any]:
    runtime = learners.peek(row.id)
    return {
        "name": row.name,
        "model": row.model,
        "description": row.description,
        "config": row.config,
        "is_active": row.is_active,
        "steps_received": row.steps_received if steps_received is None else steps_received,
        "steps_learned": runtime.cursor if runtime is not None else 0,
        "learn_errors": runtime.learn_errors if runtime is not None else 0,
        "created_at": row.created_at,
    }


# -- the application -----------------------------------------------------------------------------


def create_app(
    data_dir: Path,
    *,
    users: Sequence[tuple[str, str]] = (),
    token_ttl: float = DEFAULT_TOKEN_TTL,
    max_batch_steps: int = DEFAULT_MAX_BATCH_STEPS,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    synchronous: str = "FULL",
    learn: bool = True,
    save_interval: float = learner_mod.DEFAULT_SAVE_INTERVAL,
    streaming: bool = True,
) -> FastAPI:
    """The server application over ``data_dir`` (created when missing).

    ``users`` are ``(name, password)`` accounts created, or given that password, at once.
    Learner threads start with the application's lifespan and stop (saving weights) with it.
    With ``streaming=False`` the server speaks Part 1 only, as an old Agents Bar would: the
    streaming endpoints answer 404, so clients can be tested against an old server.
    """
    data_dir = Path(data_dir)
    # The database holds password hashes and every agent's data: the owner's eyes only, whatever
    # the directory held before (SQLite gives the -wal and -shm files the database file's mode).
    secure_data_dir(data_dir)
    store = Store(data_dir / "agents-bar.sqlite3", synchronous=synchronous)
    for name, password in users:
        if not name or ":" in name:
            raise ValueError(f"bad user name {name!r}")
        store.set_user(name, hash_password(password))
    signer = TokenSigner(load_or_create_secret(data_dir), ttl=token_ttl)
    learners = Learners(store, data_dir, learn=learn, save_interval=save_interval)
    secure_data_dir(data_dir)  # the database, its WAL and the weights directory now exist
    state = _State(store, signer, learners, _Settings(max_batch_steps, max_batch_bytes, max_body_bytes))
    # A fixed hash to check against when the user does not exist, so that a login for an unknown
    # name takes as long as one with a wrong password.
    dummy_hash = hash_password("not a password")
    login_limiter = LoginLimiter()
    upload_slots = asyncio.Semaphore(MAX_UPLOADS_AT_ONCE)
    upload_dir = data_dir / "uploads"
    upload_dir.mkdir(mode=0o700, exist_ok=True)
    for leftover in upload_dir.iterdir():  # bodies of uploads a crash interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    hashing = _HashingPool(LOGIN_HASH_WORKERS)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load the agents (importing torch, restoring weights) beside serving, not before it: after
        # a restart, clients' queued steps are accepted at once, and an agent that is asked to act
        # before its turn is loaded on demand (Learners.get).
        loader = threading.Thread(target=learners.start_all, name="agents-bar-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            hashing.close()
            await run_in_threadpool(learners.close)
            await run_in_threadpool(loader.join, 30)
            store.close()

    app = FastAPI(title="Agents Bar (agents-bar-stream)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.abs = state

    # -- errors -------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return _json({"detail": exc.detail, **exc.extra}, exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _json({"detail": _validation_text(exc.errors())}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"detail": str(exc.detail)}, exc.status_code, exc.headers)

    @app.exception_handler(sqlite3.Error)
    async def _storage_error(request: Request, exc: sqlite3.Error) -> Response:
        # The disk is full or failing: nothing was applied (every write is one transaction), and
        # the client's data is safe with it. 503 tells it to come back later, as the protocol says.
        logger.error("storage error on %s %s: %s", request.method, request.url.path, exc)
        return _json({"detail": f"the server cannot write its storage now ({exc}); try again later"}, 503,
                     {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json({"detail": "internal server error"}, 500)

    # -- auth ---------------------------------------------------------------------------------

    def _user(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, "not authenticated: send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
        username = signer.verify(token.strip())
        if username is None:
            raise APIError(
                401,
                "the access token is invalid or has expired; log in again",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return username

    def _agent(user: str, name: str) -> AgentRow:
        row = store.get_agent(user, name) if is_valid_agent_name(name) else None
        if row is None:
            raise APIError(404, f"agent {name!r} not found")
        return row

    async def _runtime(row: AgentRow) -> learner_mod.AgentRuntime:
        # Building an agent (torch, weights from disk) takes a while: never on the event loop.
        runtime = learners.peek(row.id)
        if runtime is not None:
            return runtime
        try:
            return await run_in_threadpool(learners.get, row)
        except AgentDeleted:  # deleted while it was being built
            raise APIError(404, f"agent {row.name!r} not found") from None
        except RuntimeError as exc:  # shutting down
            raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None
        except Exception as exc:  # the agent cannot be built (e.g. the library refuses its config)
            logger.exception("agent %s cannot be loaded", row.id)
            raise APIError(503, f"agent {row.name!r} cannot be loaded: {exc}") from None

    p = API_PREFIX

    @app.post(p + "/login/access-token")
    async def login(request: Request) -> Response:
        body = await _read_body(request, 64 * 1024)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            fields = await _form_fields(request, body)
        else:
            try:
                fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                raise APIError(422, "the form is not valid UTF-8") from None
        username, password = fields.get("username"), fields.get("password")
        if not username or password is None:
            raise APIError(422, "form fields 'username' and 'password' are required (application/x-www-form-urlencoded)")
        if not isinstance(username, str) or not isinstance(password, str):
            raise APIError(422, "username and password must be text fields")
        address = request.client.host if request.client else "unknown"
        wait = login_limiter.try_acquire(username, address)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise APIError(429, f"too many failed logins for this account or from this address; try again in {retry} s",
                           headers={"Retry-After": str(retry)})
        stored = store.password_hash(username)
        if hashing.waiting >= MAX_LOGINS_WAITING:
            login_limiter.release(username, address)  # not judged: no failure to count
            raise APIError(429, "too many logins at once; try again in a second", headers={"Retry-After": "1"})
        ok = await hashing.run(verify_password, password, stored or dummy_hash)
        if ok and stored:
            login_limiter.release(username, address)
        else:
            raise APIError(400, "incorrect username or password")
        return _json({"access_token": signer.issue(username), "token_type": "bearer"})

    # -- Part 1 ---------------------------------------------------------------------------------

    @app.get(p + "/agents/")
    @app.get(p + "/agents", include_in_schema=False)
    async def list_agents(request: Request) -> Response:
        user = _user(request)
        rows = store.list_agents(user)
        return _json([_agent_json(r, learners) for r in rows])

    @app.post(p + "/agents/")
    @app.post(p + "/agents", include_in_schema=False)
    async def create_agent(request: Request) -> Response:
        user = _user(request)
        doc = _parse_json(await _read_body(request, MAX_SMALL_BODY))
        if not isinstance(doc, dict):
            raise APIError(422, "the body must be a JSON object with name, model and config")
        name = doc.get("name")
        if not is_valid_agent_name(name):
            raise APIError(422, "name must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit")
        model = doc.get("model")
        if not isinstance(model, str) or model.lower() not in SUPPORTED_MODELS:
            raise APIError(422, f"unknown model {model!r}; supported: {', '.join(SUPPORTED_MODELS)}")
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
            raise APIError(422, "description must be a string of at most 10000 characters, or null")
        is_active = doc.get("is_active", True)
        if not isinstance(is_active, bool):
            raise APIError(422, "is_active must be true or false")
        try:
            config = validate_config(model, config_doc)
        except ConfigError as exc:
            raise APIError(422, str(exc)) from None
        try:
            row = await run_in_threadpool(
                lambda: store.create_agent(
                    owner=user, name=name, model=model, description=description, config=config, is_active=is_active,
                    max_per_owner=MAX_AGENTS_PER_USER,
                )
            )
        except AgentExists:
            raise APIError(409, f"an agent named {name!r} already exists") from None
        except TooManyAgents:
            raise APIError(422, f"this account has {MAX_AGENTS_PER_USER} agents, the most it may have; delete one first") from None
        try:
            await run_in_threadpool(learners.get, row)
        except Exception as exc:
            # The hyperparameters passed our checks but the library refused them: undo the create.
            logger.warning("agent %s: cannot build %s", row.id, model, exc_info=True)
            await run_in_threadpool(store.delete_agent, row.id)
            await run_in_threadpool(learners.remove, row.id)
            raise APIError(422, f"the {model} agent cannot be built with this config: {exc}") from None
        return _json(_agent_json(row, learners), 201)

    @app.get(p + "/agents/{name}")
    async def get_agent(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        return _json(_agent_json(row, learners))

    @app.delete(p + "/agents/{name}")
    async def delete_agent(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        await run_in_threadpool(store.delete_agent, row.id)
        await run_in_threadpool(learners.remove, row.id)
        return _json({"detail": f"agent {name!r} deleted"}, 202)

    @app.post(p + "/agents/{name}/act")
    async def act(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        raw_noise = request.query_params.get("noise", "0")
        try:
            noise = float(raw_noise)
        except ValueError:
            raise APIError(422, f"noise must be a number, got {raw_noise!r:.40}") from None
        if not (math.isfinite(noise) and noise >= 0):
            raise APIError(422, "noise must be a finite number >= 0")
        obs = _check_obs(_parse_json(await _read_body(request, MAX_SMALL_BODY)), row.config["obs_size"])
        runtime = await _runtime(row)
        try:
            action = await run_in_threadpool(runtime.act, obs, noise)
        except AgentFailure as exc:
            logger.warning("agent %s: %s", row.id, exc, exc_info=True)
            raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None
        return _json({"action": action})

    @app.post(p + "/agents/{name}/step")
    async def step(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        doc = _parse_json(await _read_body(request, MAX_SMALL_BODY))
        if not isinstance(doc, dict) or "step_data" not in doc:
            raise APIError(422, 'the body must be {"step_data": step}')
        data = doc["step_data"]
        try:
            validate_step(
                data, obs_size=row.config["obs_size"], action_size=row.config["action_size"], discrete=is_discrete(row.model)
            )
        except StepInvalid as exc:
            raise APIError(422, f"invalid step: {exc}") from None
        try:
            position = await run_in_threadpool(store.append_step, row.id, data)
        except LookupError:
            raise APIError(404, f"agent {name!r} not found") from None
        runtime = learners.peek(row.id)
        if runtime is not None:
            runtime.notify()
        return _json({"detail": "step accepted", "position": position})

    @app.get(p + "/agents/{name}/loss")
    async def loss(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        runtime = await _runtime(row)
        try:
            return _json(await run_in_threadpool(runtime.loss))
        except AgentFailure as exc:
            raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None

    @app.get(p + "/snapshots/{name}")
    async def get_snapshot(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        runtime = await _runtime(row)

        def build() -> dict[str, Any]:
            network = runtime.network_bytes()
            total = store.steps_received(row.id)
            start = max(total - SNAPSHOT_BUFFER_STEPS, 0)
            steps = [s for _p, _q, s in store.read_log(row.id, start, SNAPSHOT_BUFFER_STEPS)]
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
            return _json(await run_in_threadpool(build))
        except AgentFailure as exc:
            raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None

    @app.post(p + "/snapshots/{name}")
    async def post_snapshot(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        # The body goes to a file as it arrives and is parsed by a child process (uploads.py):
        # its size never holds the event loop or the GIL, and the child's memory goes with it.
        # Two at a time; a third waits (not reading, so its client is held back by TCP).
        async with upload_slots:
            with tempfile.TemporaryDirectory(dir=upload_dir) as tmp:
                body_path, network_path = os.path.join(tmp, "body"), os.path.join(tmp, "network")
                await _spool_body(request, state.settings.max_body_bytes, body_path)
                result = await _check_snapshot_in_child(body_path, network_path, row)
                network = await run_in_threadpool(Path(network_path).read_bytes) if result.get("network") else b""
        runtime = await _runtime(row)
        if network:
            try:
                await run_in_threadpool(runtime.load_network_bytes, network)
            except NetworkFormatError as exc:
                raise APIError(422, str(exc)) from None
            except AgentFailure as exc:
                raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None
        return _json({"detail": "snapshot loaded"})

    # The accepted log, in order: our own addition for inspection, served in both modes.
    @app.get(p + "/agents/{name}/steps")
    async def get_steps(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        start = _int_param(request, "start", 0, 0, 2**62)
        limit = _int_param(request, "limit", 1000, 1, MAX_LOG_PAGE)

        def page() -> bytes:
            entries = store.read_log(row.id, start, limit)
            total = store.steps_received(row.id)
            end = start + len(entries)
            nxt = end if end < total else None
            steps = [{"producer_id": p_, "seq": q, "step": s} for p_, q, s in entries]
            return orjson.dumps({"steps": steps, "next": nxt})

        return Response(await run_in_threadpool(page), media_type="application/json")

    # -- Part 2 ---------------------------------------------------------------------------------

    if not streaming:  # an old, Part 1 only, Agents Bar: the endpoints below answer 404
        return app

    @app.get(p + "/stream/info")
    async def stream_info() -> Response:
        return _json(
            {"protocol": PROTOCOL_VERSION, "max_batch_steps": state.settings.max_batch_steps, "max_batch_bytes": state.settings.max_batch_bytes}
        )

    @app.post(p + "/agents/{name}/steps")
    async def post_steps(name: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        limits = {"max_batch_steps": state.settings.max_batch_steps, "max_batch_bytes": state.settings.max_batch_bytes}
        body = await _read_body(request, state.settings.max_batch_bytes, too_large=limits)
        result = await run_in_threadpool(_apply_steps, state, row, body, limits)
        runtime = learners.peek(row.id)
        if runtime is not None and result["applied"]:
            runtime.notify()
        return _json(result)

    @app.get(p + "/agents/{name}/producers/{producer_id}")
    async def get_producer(name: str, producer_id: str, request: Request) -> Response:
        row = _agent(_user(request), name)
        if not is_valid_producer_id(producer_id):
            raise APIError(422, "producer_id must be 1 to 64 characters of [A-Za-z0-9_-]")
        return _json({"acked_seq": store.acked_seq(row.id, producer_id)})

    return app


def _int_param(request: Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(422, f"{key} must be an integer, got {raw!r:.40}") from None
    if not low <= value <= high:
        raise APIError(422, f"{key} must be between {low} and {high}")
    return value


def _apply_steps(state: _State, row: AgentRow, body: bytes, limits: dict[str, int]) -> dict[str, int]:
    """Parse, check and apply one ``POST /steps`` body, in the order of the protocol's table."""
    doc = _parse_json(body)
    if not isinstance(doc, dict):
        raise APIError(422, 'the body must be {"producer_id", "first_seq", "steps"}')
    steps = doc.get("steps")
    if type(steps) is list and len(steps) > state.settings.max_batch_steps:
        raise APIError(413, f"{len(steps)} steps is over the limit of {state.settings.max_batch_steps} per batch", **limits)
    producer_id = doc.get("producer_id")
    if not is_valid_producer_id(producer_id):
        raise APIError(422, "producer_id must be 1 to 64 characters of [A-Za-z0-9_-]")
    first_seq = doc.get("first_seq")
    if type(first_seq) is not int or first_seq < 0:
        raise APIError(422, "first_seq must be an integer >= 0")
    if type(steps) is not list or not steps:
        raise APIError(422, "steps must be a non-empty list")
    acked = state.store.acked_seq(row.id, producer_id)
    if first_seq > acked + 1:
        raise APIError(409, f"sequence gap: first_seq is {first_seq}, expected {acked + 1}", expected_seq=acked + 1)
    obs_size, action_size, discrete = row.config["obs_size"], row.config["action_size"], is_discrete(row.model)
    for i, step in enumerate(steps):
        try:
            validate_step(step, obs_size=obs_size, action_size=action_size, discrete=discrete)
        except StepInvalid as exc:
            raise APIError(422, f"step {i} (seq {first_seq + i}) is invalid: {exc}", index=i) from None
    try:
        acked_seq, applied, duplicates = state.store.append_batch(row.id, producer_id, first_seq, steps)
    except SequenceGap as gap:  # another request of the same producer got in first
        raise APIError(
            409, f"sequence gap: first_seq is {first_seq}, expected {gap.expected_seq}", expected_seq=gap.expected_seq
        ) from None
    except LookupError:
        raise APIError(404, f"agent {row.name!r} not found") from None
    return {"acked_seq": acked_seq, "applied": applied, "duplicates": duplicates}


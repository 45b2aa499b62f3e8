"""``Client`` (service address and authentication) and ``RemoteAgent`` (the public surface).

``RemoteAgent`` mirrors the published ``agents_bar.RemoteAgent`` call for call, with two
differences a user feels: ``step()`` queues the transition on local disk and returns at once
(see :mod:`agents_bar_stream.storage` and :mod:`agents_bar_stream.flusher`), and ``act()`` is
bounded by a deadline.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import random
import re
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay

from agents_bar_stream import config as cfg
from agents_bar_stream.exceptions import (
    AgentNotFoundError,
    AgentsBarError,
    APIError,
    ClosedError,
    ConfigurationError,
    InvalidRequestError,
    InvalidStepError,
    QueueLockedError,
    ServerBusyError,
    ServiceUnavailableError,
    StorageError,
    WrongServiceError,
)
from agents_bar_stream.protocol import (
    API_PREFIX,
    SUPPORTED_MODELS,
    UnconfirmedShapeError,
    agent_obs_shape,
    agent_sizes,
    encode_observation,
    is_discrete,
    is_valid_agent_name,
)
from agents_bar_stream.session import DeadlinePassed, Session
from agents_bar_stream.transport import Response

if TYPE_CHECKING:  # pragma: no cover
    # Layers below, imported at run time only when used: `import agents_bar_stream` does not load
    # the storage (diskcache, SQLite) for a program that only calls act(), nor the policy's
    # onnxruntime for one that acts remotely.
    from agents_bar_stream.policy import LocalPolicy, PolicySource
    from agents_bar_stream.stream import Stream

__all__ = ["Client", "EncodedAgentState", "RemoteAgent", "wait_until_agent_exists", "wait_until_agent_is_active"]

logger = logging.getLogger(__name__)

ActionType = int | list[int | float]

#: Where act() gets its answer: the server, the agent's exported policy run here, or the server with
#: the local policy instead of the fallback when the server does not answer in time.
POLICY_MODES = ("remote", "local", "auto")


def _row_size(row: Any) -> int | None:
    if isinstance(row, (list, tuple)) or getattr(row, "ndim", 0) == 1:
        return len(row)
    return None


def _is_batch(obs: Any) -> bool:
    """Whether ``obs`` is a batch of observations (2-D: an array of ndim 2, or a list of rows)."""
    ndim = getattr(obs, "ndim", None)
    if ndim is not None:
        return bool(ndim == 2)
    if isinstance(obs, (list, tuple)) and obs:
        first = obs[0]
        return isinstance(first, (list, tuple)) or getattr(first, "ndim", 0) == 1
    return False


@dataclasses.dataclass
class EncodedAgentState:
    """An agent's snapshot as the service sends it: sizes, and base64 strings of safe encodings."""

    model: str
    obs_size: int
    action_size: int
    encoded_config: str
    encoded_network: str
    encoded_buffer: str


class Client:
    """Where the service is and who we are there.

    ``base_url`` comes from the argument, else ``$AGENTS_BAR_URL``, else ``http://127.0.0.1:8080``;
    ``/api/v1`` is appended. Credentials: ``access_token`` (else ``$AGENTS_BAR_ACCESS_TOKEN``), else
    ``username``/``password`` (else ``$AGENTS_BAR_USERNAME``/``$AGENTS_BAR_PASSWORD``, or the published
    client's ``$AGENTS_BAR_USER``/``$AGENTS_BAR_PASS``). A client with a token makes no network call
    when built; one with credentials logs in on first use and once more whenever the server answers
    ``401``. The token is never logged nor shown in ``repr``.

    Raises :class:`ConfigurationError` (a ``ValueError``) when no credentials can be found.
    """

    def __init__(
        self,
        base_url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        access_token: str | None = None,
        *,
        timeouts: cfg.Timeouts = cfg.Timeouts(),
    ) -> None:
        for name, value in (("base_url", base_url), ("username", username), ("password", password),
                            ("access_token", access_token)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
        if base_url is not None and "://" not in base_url and username is not None:
            # The published client's positional order was (username, password, base_url); a first
            # argument that is no URL, followed by another, can only be a call written for it.
            base_url, username, password = password, base_url, username
        if not isinstance(timeouts, cfg.Timeouts):
            raise ConfigurationError("timeouts must be an agents_bar_stream.config.Timeouts")
        url = base_url or os.environ.get(cfg.ENV_URL) or cfg.DEFAULT_BASE_URL
        url = url.rstrip("/")
        if url.endswith(API_PREFIX):
            url = url[: -len(API_PREFIX)]
        if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise ConfigurationError(f"base_url must start with http:// or https:// and name a host, got {url!r}")
        token = access_token or (os.environ.get(cfg.ENV_ACCESS_TOKEN) if username is None else None)
        if token is None:
            if username is None and password is None:
                username, password = cfg.env_credentials()
            if not username or not password:
                raise ConfigurationError(
                    "no credentials: pass access_token, or username and password, or set "
                    f"${cfg.ENV_ACCESS_TOKEN}, or ${cfg.ENV_USERNAME} and ${cfg.ENV_PASSWORD}")
        self._session = Session(url, username=username, password=password, access_token=token, timeouts=timeouts)

    def __repr__(self) -> str:
        who = self.username or "token"
        return f"Client(base_url={self.base_url!r}, user={who!r})"

    @property
    def base_url(self) -> str:
        """The service's address, without ``/api/v1``."""
        return self._session.base_url

    @property
    def username(self) -> str | None:
        return self._session.username

    @property
    def can_login(self) -> bool:
        """Whether there are credentials to log in with (again), not only a token."""
        return self._session.can_login

    @property
    def closed(self) -> bool:
        return self._session.closed

    def login(self, timeout: tuple | None = None) -> None:
        """Exchange the credentials for a fresh access token now (``timeout``: (connect, read) seconds).

        Raises :class:`AuthenticationError` when the server refuses them.
        """
        self._session.login(timeout)

    def token(self, timeout: tuple | None = None) -> str:
        """The access token in use, logging in first when there is none yet. Never logged; keep it secret."""
        return self._session.token(timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: tuple | None = None,
        auth: bool = True,
        deadline: float | None = None,
    ) -> Response:
        """One authenticated request; logs in again once on ``401`` when it can. Returns any status.

        With ``deadline`` (a ``time.monotonic()`` value) the whole call, logins included, ends by
        then: each part gets only the time left, and :class:`ServiceUnavailableError` says when none is.
        """
        return self._session.request(method, path, body=body, params=params, timeout=timeout, auth=auth,
                                     deadline=deadline)

    def close(self) -> None:
        """Close pooled connections. Idempotent."""
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_number(name: str, value: Any, *, minimum: float = 0.0, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ConfigurationError(f"{name} must be a number >= {minimum}, got {value!r}")
    return value


def _act_retryable(exc: BaseException) -> bool:
    # 500 is a server bug, not a passing state: repeating act() would only burn the deadline.
    if isinstance(exc, ServerBusyError):
        return exc.status != 500
    return isinstance(exc, ServiceUnavailableError)


class _DeadlineWait:
    """Full-jitter backoff for act(), honouring Retry-After, never sleeping past the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = random.uniform(0, min(0.5, 0.02 * 2 ** state.attempt_number))
        if isinstance(exc, ServerBusyError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return max(0.0, min(delay, self.deadline - time.monotonic()))


# Fields of StreamOptions that RemoteAgent also takes as keywords, deprecated: they work, with a
# DeprecationWarning saying to pass stream=StreamOptions(...). `batch_size` is not among them: it is
# also an ai-traineree hyperparameter (the learner's batch), and a program written for the
# published client, which sent every unknown keyword as the agent's config, means that one.
_DEPRECATED_STREAM_KEYWORDS = frozenset({
    "queue_dir", "durability", "flush_interval", "commit_interval", "max_pending_bytes",
    "on_full", "block_timeout", "close_timeout", "retry_policy",
})


class RemoteAgent:
    """An agent in the Agents Bar service; a drop-in for ``agents_bar.RemoteAgent``.

    Parameters (keyword-only after ``agent_name``; defaults in :mod:`agents_bar_stream.config`):
        act_timeout: deadline in seconds for ``act`` across all its retries (default 5).
        fallback: ``callable(obs) -> action`` used by ``act`` when the service stays unreachable
            until the deadline; without it ``act`` raises :class:`ServiceUnavailableError`.
        stream: a :class:`~agents_bar_stream.config.StreamOptions`, how the streaming queue of
            ``step`` behaves (its directory, durability, batching, limits). Its fields given as
            keywords (``queue_dir=``, ...) still work but are deprecated; ``batch_size=`` is the
            agent's hyperparameter, as in the published client.
        description: the agent's description, sent by ``create_agent`` (not a hyperparameter).
        obs_size, action_size, agent_model: known sizes and model (else read from the server).
        access_token, username, password: build a Client for this agent when ``client`` is None.
        policy: where ``act`` gets its action: ``"remote"`` (default: the server), ``"local"`` (the
            agent's exported policy run here with ONNX Runtime, kept fresh in the background) or
            ``"auto"`` (the server; the local policy answers when the server does not in time).
            ``"local"`` and ``"auto"`` need the ``local`` extra (numpy, onnxruntime).
        policy_refresh: seconds between two checks for a new policy (conditional GETs; default 5).
        on_delivered: ``callable(first_seq, last_seq)`` called after each batch the server
            acknowledged (the producer's sequence numbers, as ``GET .../producers/{id}`` counts).
        on_error: ``callable(exc, info)`` called for what retrying cannot fix: credentials refused
            after a fresh login (``info["kind"] == "authentication"``), a step dead-lettered
            (``"dead_letter"``, with its ``seq``), the agent deleted (``"agent_deleted"``), a
            ``base_url`` that does not speak the protocol (``"wrong_service"``); and for an outage
            (``"outage"``), a 404 (``"agent_not_found"``) or another refusal (``"refused"``) once it
            has lasted ``StreamOptions.error_interval`` (60 s). A problem that goes on is reported
            again at most once per ``error_interval``. ``info`` also has ``agent``, ``pending`` and
            ``seconds`` (how long the problem has lasted).
            Both callbacks run on the background delivery thread: keep them short (hand work to
            your own thread or queue); one that raises is logged and delivery goes on. ``flush()``
            waits for the acknowledgement, not for the callback: the last ``on_delivered`` may run
            a moment after it returned.
        Any other keyword is an agent hyperparameter sent with ``create_agent`` (numbers, strings or
        bools), as with the published client.
    """

    def __init__(self, client: Client | None, agent_name: str, *, act_timeout: float = cfg.DEFAULT_ACT_TIMEOUT,
                 fallback: Callable[[Any], ActionType] | None = None, description: str | None = None,
                 config: Mapping[str, Any] | None = None, stream: cfg.StreamOptions | None = None,
                 policy: str = "remote", policy_refresh: float = 5.0,
                 on_delivered: Callable[[int, int], None] | None = None,
                 on_error: Callable[[Exception, dict[str, Any]], None] | None = None, **kwargs: Any) -> None:
        if not is_valid_agent_name(agent_name):
            # The name goes into URLs and the default queue directory's name: refuse what could
            # be read as a path or a query there, as the server does.
            raise ConfigurationError(
                "agent_name must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit, "
                f"got {agent_name!r}")
        access_token = kwargs.pop("access_token", None)
        username = kwargs.pop("username", None)
        password = kwargs.pop("password", None)
        if client is None:
            client = Client(username=username, password=password, access_token=access_token)
        elif not isinstance(client, Client):
            raise ConfigurationError(f"client must be an agents_bar_stream.Client, got {type(client).__name__}")
        self._client = client
        self._session = client._session
        self.agent_name = agent_name
        self.act_timeout = _check_number("act_timeout", act_timeout)
        if fallback is not None and not callable(fallback):
            raise ConfigurationError("fallback must be a callable taking obs and returning an action")
        self.fallback = fallback
        for name, callback in (("on_delivered", on_delivered), ("on_error", on_error)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(f"{name} must be a callable or None, got {type(callback).__name__}")
        self._on_delivered = on_delivered
        self._on_error = on_error
        if policy not in POLICY_MODES:
            raise ConfigurationError(f"policy must be one of {', '.join(map(repr, POLICY_MODES))}, got {policy!r}")
        if (isinstance(policy_refresh, bool) or not isinstance(policy_refresh, (int, float))
                or not 0 < policy_refresh < float("inf")):
            raise ConfigurationError(f"policy_refresh must be a number of seconds > 0, got {policy_refresh!r}")
        if policy != "remote":
            import importlib.util  # noqa: PLC0415

            missing = [m for m in ("numpy", "onnxruntime") if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigurationError(f"policy={policy!r} runs the agent's policy here and needs "
                                         f"{' and '.join(missing)}: pip install 'agents-bar-stream[local]'")
        self.policy_mode: str = policy
        self.policy_refresh = float(policy_refresh)
        self._policy_obj: PolicySource | None = None
        # The version of the local policy that chose the last action (None after a remote one): the
        # next step() carries it. One act() per step() is assumed, as in every control loop.
        self._step_version: str | None = None
        self._description = description
        if description is not None and not isinstance(description, str):
            raise ConfigurationError(f"description must be a string or None, got {type(description).__name__}")
        if stream is None:
            stream = cfg.StreamOptions()
        elif not isinstance(stream, cfg.StreamOptions):
            raise ConfigurationError(f"stream must be an agents_bar_stream.StreamOptions, got {type(stream).__name__}")
        old_style = {k: kwargs.pop(k) for k in list(kwargs) if k in _DEPRECATED_STREAM_KEYWORDS}
        if old_style:
            warnings.warn(
                f"RemoteAgent({', '.join(f'{k}=' for k in sorted(old_style))}...) is deprecated: pass "
                f"stream=StreamOptions({', '.join(f'{k}=...' for k in sorted(old_style))})",
                DeprecationWarning, stacklevel=2)
            stream = dataclasses.replace(stream, **old_style)  # validated again by StreamOptions
        self._stream_options: cfg.StreamOptions = stream
        self._obs_size: int | None = kwargs.get("obs_size")
        self._action_size: int | None = kwargs.get("action_size")
        self._agent_model: str | None = kwargs.pop("agent_model", None)
        if config is not None and not isinstance(config, Mapping):
            raise ConfigurationError(f"config must be a mapping of hyperparameters, got {type(config).__name__}")
        hyper = {**kwargs, **(config or {})}
        for key, value in hyper.items():
            try:
                orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
            except TypeError:
                raise TypeError(
                    f"unknown option {key}={value!r}: RemoteAgent takes its documented options and agent "
                    "hyperparameters (JSON values: numbers, strings, bools, lists)") from None
        self._config: dict[str, Any] = hyper
        self._discrete: bool | None = None
        self._sizes_confirmed = False  # the sizes above are the agent's own (create_agent, sync), not a guess
        self.loss: dict[str, float] = {}
        self._act_stats: dict[str, Any] = {"act_calls": 0, "act_retries": 0, "act_fallbacks": 0, "act_local": 0,
                                           "act_remote": 0, "act_seconds": 0.0}
        self._stream_obj: Stream | None = None
        self._left_at_close = 0
        # What remove() did with the local queue(s): {"deleted": [dirs], "kept": [{queue_dir, pending,
        # dead_letters}], "in_use": [dirs]}; None until remove() deleted the agent.
        self._queue_removed: dict[str, list[Any]] | None = None
        self._stream_lock = threading.Lock()
        self._closed = False
        self._resume_earlier_queue()

    def _resume_earlier_queue(self) -> None:
        """If an earlier run left steps in this agent's queue, open it now so they go out first.

        A queue held by another process is left alone here; step() reports that if it is called.
        """
        queue_dir = self._stream_options.queue_dir
        if queue_dir is None:
            queue_dir = cfg.default_queue_dir(self._client.base_url, self.agent_name)
        if not (Path(queue_dir) / "data").is_dir():
            return
        try:
            stream = self._stream()
        except (QueueLockedError, StorageError) as exc:
            logger.debug("not resuming queue %s now: %s", queue_dir, exc)
            return
        if stream.pending == 0:
            # Nothing to resume: do not hold the directory (and its lock) until the first step().
            with self._stream_lock:
                self._stream_obj = None
            stream.close(0)

    def __repr__(self) -> str:
        return f"RemoteAgent({self.agent_name!r}, base_url={self._client.base_url!r})"

    # --- what the service knows -------------------------------------------------------------------

    @property
    def client(self) -> Client:
        return self._client

    @property
    def obs_size(self) -> int:
        if self._obs_size is None:
            self.sync()
        return self._obs_size  # type: ignore[return-value]

    @property
    def action_size(self) -> int:
        if self._action_size is None:
            self.sync()
        return self._action_size  # type: ignore[return-value]

    @property
    def agent_model(self) -> str:
        if self._agent_model is None:
            self.sync()
        return self._agent_model  # type: ignore[return-value]

    @property
    def discrete(self) -> bool:
        if self._discrete is None:
            self._discrete = is_discrete(self.agent_model)
        return self._discrete

    @property
    def hparams(self) -> dict[str, str | float | int]:
        """The agent's hyperparameters; values are numbers or strings, as the published client gives them."""
        return {k: v if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
                for k, v in self._config.items()}

    @property
    def exists(self) -> bool:
        """Whether the agent exists and this account can reach it.

        Raises :class:`AuthenticationError` when the credentials are refused,
        :class:`WrongServiceError` when ``base_url`` is no Agents Bar, :class:`ServiceUnavailableError`
        when the service cannot be reached: none of them means the agent does not exist.
        """
        return self._exists(None)

    def _exists(self, timeout: tuple | None) -> bool:
        self._check_open()
        try:
            return isinstance(self._agent_details(timeout), dict)
        except AgentNotFoundError:
            # Only "no such agent" is an answer; refused credentials, a wrong address or an outage
            # raise, so that a caller never takes them for a missing agent (and re-creates it).
            return False

    @property
    def is_active(self) -> bool:
        return bool(self.info().get("is_active"))

    def _is_active(self, timeout: tuple | None) -> bool:
        self._check_open()
        try:
            info = self._agent_details(timeout)
        except AgentNotFoundError:
            return False
        return bool(info.get("is_active"))

    def _agent_details(self, timeout: tuple | None) -> dict[str, Any]:
        """GET /agents/{name}, checked to be an agent's JSON (a web page answering 200 is not one)."""
        response = self._session.request("GET", self._path(), timeout=timeout).raise_for_status()
        try:
            info = response.json()
        except APIError:
            info = None
        if not isinstance(info, dict):
            raise WrongServiceError(self._session.not_agents_bar(
                f"GET {API_PREFIX}{self._path()} answered {response.status} without an agent's JSON "
                f"({response.content[:60]!r})"))
        return info

    def _path(self, suffix: str = "") -> str:
        return f"/agents/{self.agent_name}{suffix}"

    def _call(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None) -> Response:
        self._check_open()
        raw = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        return self._session.request(method, path, body=raw, params=params).raise_for_status()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"RemoteAgent {self.agent_name!r} is closed")
        if self._session.closed:
            # Nothing could ever deliver a step queued now: refuse it rather than keep it pending.
            raise ClosedError(
                f"the Client of RemoteAgent {self.agent_name!r} is closed; open a new Client and RemoteAgent")

    def create_agent(self, obs_size: int, action_size: int, agent_model: str, active: bool = True,
                     description: str | None = None) -> dict:
        """Create the agent in the service and return its details.

        Raises :class:`ConfigurationError` for an unknown model or bad sizes (before any request),
        :class:`AgentExistsError` when the name is taken.
        """
        for name, value in (("obs_size", obs_size), ("action_size", action_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(agent_model, str) or agent_model.lower() not in SUPPORTED_MODELS:
            raise ConfigurationError(
                f"Model '{agent_model}' isn't supported. Please select one from {SUPPORTED_MODELS}")
        if description is not None and not isinstance(description, str):
            raise ConfigurationError("description must be a string or None")
        self._agent_model = agent_model.lower()
        self._discrete = None
        self._config["obs_size"] = obs_size
        self._config["action_size"] = action_size
        self._obs_size, self._action_size = obs_size, action_size
        self._sizes_confirmed = True
        payload = {"name": self.agent_name, "model": self._agent_model,
                   "description": description if description is not None else self._description,
                   "config": self._config, "is_active": bool(active)}
        logger.debug("creating agent %r (model %s)", self.agent_name, self._agent_model)
        created = self._call("POST", "/agents/", payload).json()
        if self._stream_obj is not None:
            # Steps queued earlier may be waiting out a backoff after 404s: try them now.
            self._stream_obj.learn_shapes(obs_size, action_size, self.discrete)
            self._stream_obj.wake()
        self._policy_changed()
        return created

    def remove(self, *, agent_name: str, quite: bool = True) -> bool:
        """Delete the agent; ``agent_name`` must repeat its name as a confirmation.

        With ``quite=True`` a wrong name is ignored (returns False); otherwise it raises ValueError.
        Returns whether the service deleted it.

        A deleted agent's queue ends with it: a new agent of the same name is a new stream
        (numbered from 0, under a new producer id), and steps the old one had not delivered are
        never sent to it. They are kept, set aside in ``<queue_dir>.removed-<time>-<producer>``
        with a WARNING that says how many; an empty queue is simply deleted (the agent's worker
        queues too). ``stats["queue_removed"]`` then says which directories were deleted, which
        were kept (with their pending steps and dead letters) and which another process still uses.
        """
        if agent_name is None or agent_name != self.agent_name:
            if quite:
                logger.warning("removal of %r ignored: agent_name %r does not match", self.agent_name, agent_name)
                return False
            raise ConfigurationError("to delete the agent, pass its name again as agent_name")
        logger.warning("agent %r is being deleted", agent_name)
        try:
            deleted = self._call("DELETE", self._path()).status == 202
        except AgentNotFoundError:
            return False
        if deleted:
            self._retire_queue()
        return deleted

    def _retire_queue(self) -> None:
        """End the deleted agent's producer stream: close its queue and set the directory aside.

        Without this a new agent of the same name (which the server numbers from 0) would get the
        old queue's numbering: a 409 the client must read as "the server lost steps" (issue 14),
        and the old agent's undelivered steps applied to the new one.
        """
        with self._stream_lock:
            stream, self._stream_obj = self._stream_obj, None
        if stream is not None and stream.pid == os.getpid():
            stream.close(0, retiring=True)  # stops the threads and writes what is in memory to disk
        report: dict[str, list[Any]] = {"deleted": [], "kept": [], "in_use": []}
        self._queue_removed = report
        if self._stream_options.queue_dir is not None:
            self._retire_directory(Path(self._stream_options.queue_dir), stream, report)
            return
        # The agent's worker queues too (base, base.w1, ...): those no other process holds.
        base = cfg.default_queue_dir(self._client.base_url, self.agent_name)
        slots = [base]
        if base.parent.is_dir():
            pattern = re.compile(re.escape(base.name) + r"\.w[0-9]+")
            slots += sorted(p for p in base.parent.iterdir() if pattern.fullmatch(p.name))
        for directory in slots:
            ours = stream is not None and Path(stream.queue.directory) == directory
            self._retire_directory(directory, stream if ours else None, report)

    def _retire_directory(self, directory: Path, stream: Stream | None, report: dict[str, list[Any]]) -> None:
        """Delete one queue directory of the deleted agent when it is empty, else set it aside (and say so)."""
        if not (directory / "data").is_dir():
            return
        from agents_bar_stream.storage import read_queue_summary  # noqa: PLC0415 (keeps import light)

        try:
            summary = read_queue_summary(directory)
        except (StorageError, OSError) as exc:
            logger.warning("agent %r was deleted but its queue %s could not be read (%s); a new agent of that "
                           "name may find the old numbering", self.agent_name, directory, exc)
            return
        holder = summary["locked_by_pid"]
        # Held by this process after our own stream was closed: its flusher is finishing a request
        # (it closes the queue when that ends). Held otherwise: another RemoteAgent or process
        # still uses the queue, and it is not ours to move.
        if holder is not None and (holder != str(os.getpid()) or stream is None):
            logger.warning("agent %r was deleted but its queue %s is still in use (process %s); a new agent of "
                           "that name needs its own queue_dir", self.agent_name, directory, holder)
            report["in_use"].append(str(directory))
            return
        try:
            if summary["pending"] == 0 and summary["dead_letters"] == 0 and holder is None:
                shutil.rmtree(directory)
                logger.info("agent %r was deleted; its empty queue %s is deleted too", self.agent_name, directory)
                report["deleted"].append(str(directory))
                return
            stamp = time.strftime("%Y%m%dT%H%M%S")
            target = directory.with_name(f"{directory.name}.removed-{stamp}-{summary['producer_id']}")
            os.rename(directory, target)
        except OSError as exc:
            logger.warning("agent %r was deleted but its queue %s could not be set aside (%s); a new agent of that "
                           "name may find the old numbering", self.agent_name, directory, exc)
            return
        logger.warning("agent %r was deleted with %d undelivered steps and %d dead letters in its queue; they are "
                       "kept in %s and are not sent to a new agent of that name (`agents-bar-stream queue gc` "
                       "deletes such queues once they are old enough)", self.agent_name,
                       summary["pending"], summary["dead_letters"], target)
        report["kept"].append({"queue_dir": str(target), "pending": summary["pending"],
                               "dead_letters": summary["dead_letters"]})

    def info(self) -> dict[str, Any]:
        """The agent's details as the server has them."""
        info = self._call("GET", self._path()).json()
        if isinstance(info.get("config"), dict):
            self._config = info["config"]
        return info

    def sync(self) -> None:
        """Refresh model, sizes and hyperparameters from the service."""
        info = self.info()
        self._agent_model = str(info["model"]).lower()
        self._config.update(info.get("config") or {})
        self._obs_size = self._config.get("obs_size", self._config.get("obs_space"))
        self._action_size = self._config.get("action_size", self._config.get("action_space"))
        self._discrete = None
        self._sizes_confirmed = self._obs_size is not None
        if self._stream_obj is not None:
            self._stream_obj.learn_shapes(self._obs_size, self._action_size, self.discrete)

    def get_loss(self) -> dict[str, float]:
        """The agent's recent losses."""
        self.loss = self._call("GET", self._path("/loss")).json()
        return self.loss

    def get_state(self) -> EncodedAgentState:
        """The agent's snapshot (config, network and buffer, encoded)."""
        body = self._call("GET", f"/snapshots/{self.agent_name}").json()
        try:
            return EncodedAgentState(**body)
        except TypeError as exc:
            raise InvalidRequestError(
                200, f"the snapshot answer does not have the six snapshot fields: {exc}") from None

    def upload_state(self, state: EncodedAgentState) -> bool:
        """Replace the agent's state with ``state``; True when the service accepted it."""
        if not isinstance(state, EncodedAgentState):
            raise ConfigurationError(f"state must be an EncodedAgentState, got {type(state).__name__}")
        self._call("POST", f"/snapshots/{self.agent_name}", dataclasses.asdict(state))
        self._policy_changed()
        return True

    # --- act: synchronous, bounded ------------------------------------------------------------------

    def act(self, obs: Any, noise: float = 0.0, *, timeout: float | None = None) -> Any:
        """The agent's action for ``obs`` (an int for discrete models, else a list of numbers).

        Bounded by ``timeout`` (default: the agent's ``act_timeout``) across all retries. Connection
        failures, 429 and 502/503/504 are retried inside that deadline. When it passes, the
        ``fallback``'s action is returned if there is one, else :class:`ServiceUnavailableError` is raised.

        With ``policy="local"`` the agent's exported policy answers here (the first call waits for
        the first model within the deadline, then falls back as above); with ``policy="auto"`` the
        server answers, and the local policy does when the server is down, busy or late (the
        ``fallback`` only when no model was fetched yet).

        A batch of observations (``[N, obs_size]``: a list of lists or a 2-D array) gives a list of N
        actions: one network run locally; N requests one after the other remotely, all within the
        one deadline (the rows left when it passes get the local policy's or the fallback's actions).
        Remotely a batch needs the agent's observation size known (``create_agent``, ``sync()``, the
        ``obs_size`` keyword): without it, or when the rows are not that size, a 2-D input is taken
        as one observation that was not flattened, and refused with ConfigurationError.

        ``stats["act_seconds"]`` adds up the time spent in act() (with ``act_calls``: the mean latency).
        """
        started = time.perf_counter()
        try:
            return self._act(obs, noise, timeout)
        finally:
            self._act_stats["act_seconds"] += time.perf_counter() - started

    def _act(self, obs: Any, noise: float, timeout: float | None) -> Any:
        self._check_open()
        if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not 0 <= noise <= 1:
            raise ConfigurationError(f"noise must be a number in [0, 1], got {noise!r}")
        noise = float(noise)
        budget = self.act_timeout if timeout is None else _check_number("timeout", timeout)
        deadline = time.monotonic() + budget
        self._act_stats["act_calls"] += 1
        batch = _is_batch(obs)
        mode = self.policy_mode
        if mode == "local":
            source = self._policy_obj
            if source is None or source.forked:
                source = self._policy_source()
            policy = source.policy
            if policy is None:
                policy = source.wait(deadline)
                if policy is None:
                    cause = ServiceUnavailableError(
                        f"no policy model within {budget:g} s ({source.last_error or 'none fetched yet'})")
                    return self._instead(obs, noise, batch, budget, cause)
            return self._act_local(policy, obs, noise, batch)
        if mode == "auto" and (self._policy_obj is None or self._policy_obj.forked):
            self._policy_source()
        if batch:
            # Remotely, a 2-D input is a batch only when its rows have the agent's known observation
            # size: else it is one observation that was not flattened, and the single path says so.
            size = self._obs_size
            rows = list(obs)
            batch = size is not None and all(_row_size(row) == size for row in rows)
        if not batch:
            return self._act_remote(obs, noise, deadline, budget)
        bodies = [self._encode_obs(row) for row in rows]  # every row checked before the first request
        actions: list[Any] = []
        for i, body in enumerate(bodies):
            try:
                actions.append(self._remote_action(body, noise, deadline))
            except ServiceUnavailableError as exc:
                return actions + self._instead(rows[i:], noise, True, budget, exc)
        self._step_version = None
        return actions

    def _act_remote(self, obs: Any, noise: float, deadline: float, budget: float) -> Any:
        body = self._encode_obs(obs)
        try:
            action = self._remote_action(body, noise, deadline)
        except ServiceUnavailableError as exc:
            return self._instead(obs, noise, False, budget, exc)
        self._step_version = None
        return action

    def _act_local(self, policy: LocalPolicy, obs: Any, noise: float, batch: bool) -> Any:
        action = policy.act_batch(obs, noise) if batch else policy.act(obs, noise)
        self._act_stats["act_local"] += 1
        self._step_version = policy.version or None
        return action

    def _instead(self, obs: Any, noise: float, batch: bool, budget: float, cause: ServiceUnavailableError) -> Any:
        """The answer when the server (or, in local mode, the first model) did not come in time:
        the local policy in auto mode when there is one, else the fallback, else the error."""
        source = self._policy_obj
        if self.policy_mode == "auto" and source is not None and source.policy is not None:
            logger.debug("act() answered by the local policy: %s", cause)
            return self._act_local(source.policy, obs, noise, batch)
        if self.fallback is None:
            raise ServiceUnavailableError(f"act() got no answer within {budget:g} s; last failure: {cause}") from cause
        self._act_stats["act_fallbacks"] += 1
        self._step_version = None
        logger.warning("act() fell back to the local policy: %s", cause)
        if batch:
            return [self.fallback(row) for row in obs]
        return self.fallback(obs)

    def _remote_action(self, body: bytes, noise: float, deadline: float) -> ActionType:
        """One POST /act of an encoded observation (retried within the deadline); raises
        ServiceUnavailableError with the cause of the last real failure when no answer came."""
        params = {"noise": noise}
        path = self._path("/act")
        last: list[ServiceUnavailableError | None] = [None]  # the last real failure, for the error's cause
        # In auto mode with a model at hand, a failure is answered locally at once: no retries.
        source = self._policy_obj
        retry = not (self.policy_mode == "auto" and source is not None and source.policy is not None)
        try:
            # The first attempt runs outside tenacity: the common case pays nothing for the retry machinery.
            try:
                response = self._act_once(path, body, params, deadline, last)
            except ServiceUnavailableError as exc:
                if not retry or not _act_retryable(exc) or time.monotonic() >= deadline:
                    raise
                response = self._act_retrying(path, body, params, deadline, exc, last)
        except ServiceUnavailableError as exc:
            # The attempt that ends a deadline usually finds no time left at all; what the caller
            # needs to read is why the attempts before it failed ("connection refused", a 503).
            raise (last[0] or exc) from None
        answer = response.json()
        action = answer.get("action") if isinstance(answer, dict) else None
        if type(action) is not list or not action or not all(type(a) in (int, float) for a in action):
            raise APIError(response.status, f"the act answer has no action list: {response.content[:120]!r}",
                           method="POST", path=path)
        self._act_stats["act_remote"] += 1
        discrete = self._discrete
        if discrete is None:
            if self._agent_model is not None:
                discrete = self.discrete
            else:
                # No network call outside the deadline: a discrete model answers with one JSON
                # integer, a continuous one with floats.
                discrete = len(action) == 1 and type(action[0]) is int
        if discrete:
            return int(action[0])
        return action

    # --- the local policy (policy="local" | "auto") -------------------------------------------------

    def _policy_source(self) -> PolicySource:
        """This process's policy source, built and started on first use (a forked child builds its own)."""
        with self._stream_lock:
            source = self._policy_obj
            if source is None or source.forked:
                self._check_open()
                from agents_bar_stream.policy import PolicySource  # noqa: PLC0415 (keeps import light)

                source = PolicySource(self._session, self.agent_name, interval=self.policy_refresh,
                                      expected=self._expected_policy)
                self._policy_obj = source
        source.start()
        return source

    def _expected_policy(self) -> dict[str, Any]:
        """What a policy model must be for this agent, as far as its sizes are known."""
        if not self._sizes_confirmed:
            return {}
        return {"expected_obs_size": self._obs_size, "expected_action_size": self._action_size,
                "expected_model": self._agent_model}

    def _policy_changed(self) -> None:
        """The agent's state changed on the server (created, uploaded): look for its new policy now."""
        if self.policy_mode == "remote":
            return
        source = self._policy_obj
        if source is None or source.forked:
            self._policy_source()  # its first fetch is at once
        else:
            source.poke()

    @property
    def policy_version(self) -> str | None:
        """The version of the local policy in use (None before the first, and with ``policy="remote"``)."""
        source = self._policy_obj
        return None if source is None or source.forked else source.version

    def refresh_policy(self, timeout: float | None = None) -> bool:
        """Ask the server for the agent's policy now (a conditional GET); True when a model is in use.

        Bounded by ``timeout`` (default ``act_timeout``). A model that does not load is refused (the
        previous one stays; see the log); a server without policies (404) leaves none. Raises
        :class:`ServiceUnavailableError` when the server does not answer in time, and
        :class:`ConfigurationError` with ``policy="remote"``.
        """
        if self.policy_mode == "remote":
            raise ConfigurationError('refresh_policy() needs RemoteAgent(..., policy="local" or "auto")')
        budget = self.act_timeout if timeout is None else _check_number("timeout", timeout)
        self._check_open()
        source = self._policy_source()
        source.fetch(time.monotonic() + budget)
        return source.policy is not None

    def _act_once(self, path: str, body: bytes, params: Mapping[str, Any], deadline: float,
                  last: list[ServiceUnavailableError | None]) -> Response:
        try:
            return self._session.request("POST", path, body=body, params=params, deadline=deadline).raise_for_status()
        except DeadlinePassed:
            raise
        except ServiceUnavailableError as exc:
            last[0] = exc
            raise

    def _act_retrying(self, path: str, body: bytes, params: Mapping[str, Any], deadline: float,
                      first: BaseException, last: list[ServiceUnavailableError | None]) -> Response:
        retrying = Retrying(
            retry=retry_if_exception(_act_retryable),
            stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
            wait=_DeadlineWait(deadline),
            reraise=True,
        )
        logger.debug("act() retrying after %s", first)
        for attempt in retrying:
            with attempt:
                self._act_stats["act_retries"] += 1
                return self._act_once(path, body, params, deadline, last)
        raise ServiceUnavailableError("act() deadline passed")  # pragma: no cover (reraise=True raises)

    def _encode_obs(self, obs: Any) -> bytes:
        try:
            return encode_observation(obs)
        except InvalidStepError as exc:
            raise ConfigurationError(str(exc)) from None

    # --- step: streamed -----------------------------------------------------------------------------

    def _stream(self) -> Stream:
        stream = self._stream_obj
        if stream is None or stream.pid != os.getpid():
            with self._stream_lock:
                stream = self._stream_obj
                if stream is None or stream.pid != os.getpid():
                    self._check_open()
                    from agents_bar_stream.stream import Stream  # noqa: PLC0415

                    discrete = is_discrete(self._agent_model) if self._agent_model else None
                    stream = Stream(self._session, self.agent_name, obs_size=self._obs_size,
                                    action_size=self._action_size, discrete=discrete, confirmed=self._sizes_confirmed,
                                    options=self._stream_options, on_delivered=self._on_delivered,
                                    on_error=self._on_error)
                    self._stream_obj = stream
        return stream

    def open_queue(self) -> RemoteAgent:
        """Open the local queue now (and start delivering what an earlier run left), instead of at the first step().

        With ``policy="local"`` or ``"auto"`` the policy's refresh starts too (else at the first act()).
        """
        self._stream().start()
        if self.policy_mode != "remote":
            self._policy_source()
        return self

    def step(self, obs: Any, action: ActionType, reward: float, next_obs: Any, done: bool) -> bool:
        """Queue one transition for delivery and return True; never waits for the network.

        The transition is validated here (types, finite numbers, lengths consistent with the agent and
        with earlier steps): a bad one raises :class:`InvalidStepError` (a ValueError) and nothing is
        queued. With ``durability="step"`` it is on disk when this returns; with ``"batch"`` it is on
        disk within ``commit_interval``. A background thread delivers the queue in order, exactly once.
        Raises :class:`QueueFullError` or :class:`StorageError` for local conditions only, and
        :class:`ClosedError` after ``close()`` of this agent or of its Client.
        """
        stream = self._stream_obj
        # `forked` rather than comparing os.getpid(): a system call on every step, where the fork
        # hook already flags every stream in a child process. A closed Client is checked here, on
        # the fast path, with one attribute read: its flusher could never deliver the step.
        if stream is None or stream.forked or self._session.closed:
            self._check_open()
            stream = self._stream()
        try:
            return stream.put(obs, action, reward, next_obs, done, self._step_version)
        except UnconfirmedShapeError as exc:
            # This step disagrees with the shape of earlier steps, and the agent's own sizes are not
            # known yet: ask the server (once; only on this error path) which shape is right.
            if not self._confirm_sizes(stream, exc):
                raise InvalidStepError(str(exc)) from None
            return stream.put(obs, action, reward, next_obs, done, self._step_version)

    def step_many(self, obs: Any, actions: Any, rewards: Any, next_obs: Any, dones: Any, *,
                  where: Any = None) -> int:
        """Queue one transition per environment of a vector environment's step; returns how many were queued.

        Each argument has a leading batch axis, as gymnasium's vector API gives them: ``obs`` and
        ``next_obs`` of shape ``[N, ...]`` (numpy arrays or lists of observations), ``actions``,
        ``rewards`` and ``dones`` of length N (``dones = terminated | truncated``). Row i is the
        transition of environment i; rows are queued in order, as N calls of :meth:`step` would,
        but all or none: every row is checked first, and a bad one raises :class:`InvalidStepError`
        that names the row (its ``row`` attribute) while nothing of the call is queued; so does a
        full queue (:class:`QueueFullError`) or disk (:class:`StorageError`). Numpy arrays keep their
        rows' shape and dtype (held as in :meth:`step`); torch tensors and lists are taken as lists.

        ``where`` (a boolean per row) leaves out the rows where it is False. gymnasium's vector
        environments reset a finished environment on the step *after* its ``done``, and that step's
        row is no transition (its obs is the final one, its next_obs the first of a new episode):
        pass ``where=~autoreset``, with ``autoreset`` the previous call's ``dones``.
        """
        n = _batch_length("obs", obs)
        for name, value in (("actions", actions), ("rewards", rewards), ("next_obs", next_obs), ("dones", dones)):
            m = _batch_length(name, value)
            if m != n:
                raise InvalidStepError(f"step_many: obs has {n} rows but {name} has {m}")
        keep = range(n) if where is None else _rows_where(where, n)
        obs_rows, next_rows = _rows(obs), _rows(next_obs)
        # Python numbers from an array in one call: the encoder's plain fast paths then apply.
        acts, rews, dns = _values(actions), _values(rewards), _values(dones)
        rows = [(obs_rows[i], acts[i], rews[i], next_rows[i], dns[i]) for i in keep]
        if not rows:
            self._check_open()
            return 0
        stream = self._stream_obj
        if stream is None or stream.forked or self._session.closed:
            self._check_open()
            stream = self._stream()
        try:
            stream.put_many(rows, self._step_version)
        except UnconfirmedShapeError as exc:
            if not self._confirm_sizes(stream, exc):
                err = InvalidStepError(str(exc))
                err.row = exc.row
                raise err from None
            stream.put_many(rows, self._step_version)
        return len(rows)

    def _confirm_sizes(self, stream: Stream, exc: Exception) -> bool:
        """Read the agent's sizes from the server, bounded by act_timeout; False when it cannot be done."""
        try:
            deadline = time.monotonic() + min(self.act_timeout, cfg.DEFAULT_ACT_TIMEOUT)
            info = self._session.request("GET", self._path(), deadline=deadline).raise_for_status().json()
        except AgentsBarError as err:
            logger.info("step() of %r: %s; the agent's sizes could not be read to check it (%s)",
                        self.agent_name, exc, err)
            return False
        obs_size, action_size, discrete = agent_sizes(info)
        if obs_size is None or discrete is None:
            return False
        self._obs_size, self._action_size = obs_size, action_size
        self._agent_model = str(info["model"]).lower()
        self._discrete = discrete
        self._sizes_confirmed = True
        stream.learn_shapes(obs_size, action_size, discrete, obs_shape=agent_obs_shape(info))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is acknowledged by the server; True if it was in time.

        Raises :class:`AuthenticationError` when the server refuses the credentials (after a fresh
        login) while it waits: that is what stops delivery, and waiting longer would not help.
        The steps stay queued either way.
        """
        _check_number("timeout", timeout, allow_none=True)
        self._check_open()
        if self._stream_obj is None:
            return True
        return self._stream_obj.flush(timeout)

    @property
    def pending(self) -> int:
        """Transitions queued and not yet acknowledged (after close(): those it left on disk)."""
        stream = self._stream_obj
        if stream is None:
            return self._left_at_close
        return stream.pending

    @property
    def stats(self) -> dict[str, Any]:
        """Counters of act() and of the streaming queue (see README)."""
        out: dict[str, Any] = dict(self._act_stats)
        source = self._policy_obj
        if source is None or source.forked:
            out["policy_version"] = out["policy_age"] = None
        else:
            confirmed = source.confirmed_at
            out["policy_version"] = source.version
            out["policy_age"] = None if confirmed is None else time.monotonic() - confirmed
        stream = self._stream_obj
        if stream is not None:
            out.update(stream.stats())
        else:  # no step() yet: the same keys, so a dashboard can read them from the start
            from agents_bar_stream.stream import idle_stats  # noqa: PLC0415

            out.update(idle_stats(self._stream_options.durability))
        out["queue_removed"] = self._queue_removed
        return out

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; the rest stays on disk. Idempotent."""
        _check_number("timeout", timeout, allow_none=True)
        if self._closed:
            return
        self._closed = True
        source = self._policy_obj
        if source is not None and not source.forked:
            source.close()
        stream, self._stream_obj = self._stream_obj, None
        if stream is not None and stream.pid == os.getpid():
            stream.close(timeout)
            self._left_at_close = stream.left_at_close

    def __enter__(self) -> RemoteAgent:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _batch_length(name: str, value: Any) -> int:
    """The number of rows of a step_many() argument: its leading axis."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and not shape:  # a 0-d numpy array or torch tensor
        raise InvalidStepError(f"step_many: {name} must have a leading batch axis, got a single value")
    if (isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__")
            or not hasattr(value, "__getitem__")):
        raise InvalidStepError(f"step_many: {name} must be a sequence or array with one entry per environment, "
                               f"got {type(value).__name__}")
    return len(value)


def _is_numpy(value: Any) -> bool:
    return type(value).__module__ == "numpy"


def _rows(value: Any) -> Any:
    """Indexable rows: a numpy array keeps its rows as arrays (their shape and dtype are held), another
    array type (a torch tensor) becomes lists, a sequence a list."""
    return value if _is_numpy(value) else _values(value)


def _values(value: Any) -> list:
    """Plain Python values of a 1-d argument (an array's numbers as ints, floats and bools)."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else list(value)


def _rows_where(where: Any, n: int) -> list[int]:
    m = _batch_length("where", where)
    if m != n:
        raise InvalidStepError(f"step_many: where has {m} entries, not one per row ({n})")
    flags = [f.item() if _is_numpy(f) and getattr(getattr(f, "dtype", None), "kind", "") == "b" else f
             for f in _values(where)]
    if any(type(f) is not bool for f in flags):
        raise InvalidStepError("step_many: where must hold booleans (a numpy bool array, or True/False)")
    return [i for i, f in enumerate(flags) if f]


def wait_until_agent_exists(agent: RemoteAgent, max_seconds: float = 20, verbose: bool = False) -> bool:
    """Poll until ``agent.exists`` or ``max_seconds`` pass; returns whether it exists.

    An unreachable service counts as "not yet"; refused credentials (:class:`AuthenticationError`)
    and a ``base_url`` that is no Agents Bar (:class:`WrongServiceError`) raise at once.
    """
    return _poll(agent, agent._exists, max_seconds, verbose, "exist")


def wait_until_agent_is_active(agent: RemoteAgent, max_seconds: float = 20, verbose: bool = False) -> bool:
    """Poll until the agent exists and is active (``agent.is_active``) or ``max_seconds`` pass; returns whether it is.

    Errors as :func:`wait_until_agent_exists`.
    """
    return _poll(agent, agent._is_active, max_seconds, verbose, "be active")


def _poll(agent: RemoteAgent, check: Callable[[tuple | None], bool], max_seconds: float, verbose: bool,
          what: str) -> bool:
    deadline = time.monotonic() + _check_number("max_seconds", max_seconds)
    delay = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining > 0 and check((min(3.05, remaining), remaining)):
                return True
        except ServiceUnavailableError as exc:
            if verbose:
                logger.info("waiting for agent %r to %s: %s", agent.agent_name, what, exc)
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 1.0)

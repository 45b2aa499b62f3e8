"""An agent's policy run on this machine with ONNX Runtime: act() without the round trip (issue 11).

The server exports an agent's greedy policy as an ONNX model whose metadata describes it (see
``agents_bar_stream/server/policy_export.py``, and ``docs/protocol.md``, Part 3); :class:`LocalPolicy`
checks such a model and acts with it, adding exploration noise the way the server's
``act(obs, noise)`` does::

    policy = LocalPolicy.from_bytes(data, expected_obs_size=4)
    action = policy.act(obs)                  # greedy: an int (dqn, rainbow) or a list of floats
    action = policy.act(obs, noise=0.1)       # epsilon-greedy, or Gaussian noise, per the model

Needs the ``local`` extra (``pip install 'agents-bar-stream[local]'``: numpy and onnxruntime),
imported only when a policy is loaded, so that ``import agents_bar_stream`` stays light.
Never imports torch or the server.

:class:`PolicySource` keeps one agent's policy fresh for ``RemoteAgent(policy="local" | "auto")``:
a daemon thread (one per agent and process) asks ``GET /agents/{name}/policy`` every ``interval``
seconds with ``If-None-Match`` through the :class:`~agents_bar_stream.session.Session`, and swaps
in a new model only once it has loaded and passed its checks; a refused one is logged (once per
version) and the previous model stays in use.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

from agents_bar_stream.exceptions import AgentsBarError, ConfigurationError, PolicyError, ServiceUnavailableError
from agents_bar_stream.session import Session

__all__ = ["LocalPolicy", "PolicyError", "PolicySource", "check_version"]

logger = logging.getLogger(__name__)

#: The export layouts this client understands (``agents_bar.format``).
SUPPORTED_FORMATS = frozenset({"1"})
_PREFIX = "agents_bar."
_INPUT = "obs"
_OUTPUT = "action"
_DISCRETE_MODELS = frozenset({"dqn", "rainbow"})
# What each model's exploration must be; a model file that says otherwise was not made by a
# server this client knows, and acting on it with the wrong noise would be a silent bug.
_EXPLORATION_KINDS = {
    "dqn": "epsilon_greedy",
    "rainbow": "epsilon_greedy",
    "ddpg": "gaussian",
    "ppo": "policy_gaussian",
}

Observation = Any  # a list or tuple of numbers, or a numpy array of shape [obs_size]
Action = Union[int, "list[float]"]


def _runtime() -> tuple[Any, Any]:
    """numpy and onnxruntime, or a ConfigurationError that says which extra to install."""
    try:
        import numpy
        import onnxruntime  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise ConfigurationError(
            f"running a policy locally needs numpy and onnxruntime ({exc.name} is missing): "
            "pip install 'agents-bar-stream[local]'"
        ) from exc
    return numpy, onnxruntime


def _meta_int(meta: Mapping[str, str], key: str) -> int:
    raw = meta.get(_PREFIX + key)
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PolicyError(f"policy metadata {_PREFIX}{key} is {raw!r}, not a positive integer") from None
    if value < 1:
        raise PolicyError(f"policy metadata {_PREFIX}{key} is {value}, not a positive integer")
    return value


def _check_noise(noise: float) -> None:
    # numbers.Real takes numpy's floats too; a string or a bool is a bug in the caller.
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not 0 <= noise < math.inf:
        raise ConfigurationError(f"noise must be a finite number >= 0, not {noise!r}")


class LocalPolicy:
    """A checked ONNX policy and a preallocated single-observation path through it.

    Build it with :meth:`from_bytes` or :meth:`from_file`. ``act`` may be called from several
    threads (they take turns on the preallocated buffers, a few microseconds each);
    ``act_batch`` runs concurrently.
    """

    def __init__(self, session: Any, meta: Mapping[str, str], *, _np: Any) -> None:
        # Private: from_bytes() checks the model before this runs.
        self._np = np = _np
        self._session = session
        self.metadata: dict[str, str] = dict(meta)
        self.model: str = meta[_PREFIX + "model"]
        self.obs_size: int = _meta_int(meta, "obs_size")
        self.action_size: int = _meta_int(meta, "action_size")
        self.discrete: bool = self.model in _DISCRETE_MODELS
        #: The weights' version (the server's ETag for this policy).
        self.version: str = meta.get(_PREFIX + "policy_version", "")
        #: How noise is added, as the server described it (see policy_export.exploration_of).
        self.exploration: dict[str, Any] = json.loads(meta[_PREFIX + "exploration"])
        self._kind: str = self.exploration["kind"]
        self.action_low: Optional[float] = None
        self.action_high: Optional[float] = None
        if not self.discrete:
            self.action_low, self.action_high = (float(v) for v in self.exploration["clip"])
        self._outputs = [_OUTPUT, self.exploration["std_output"]] if self._kind == "policy_gaussian" else [_OUTPUT]
        self._rng = np.random.default_rng()
        self._lock = threading.Lock()
        # One observation's path: the input and outputs live in arrays bound to the session once,
        # so act() copies the observation in and reads the action out with no allocation in
        # between (about 2 us less than session.run, which builds dicts and arrays per call).
        self._input = np.zeros((1, self.obs_size), dtype=np.float32)
        if self.discrete:
            self._out = np.zeros((1,), dtype=np.int64)
        else:
            self._out = np.zeros((1, self.action_size), dtype=np.float32)
        self._std = np.zeros((1, self.action_size), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_input(_INPUT, "cpu", 0, np.float32, list(self._input.shape), self._input.ctypes.data)
        binding.bind_output(_OUTPUT, "cpu", 0, self._out.dtype.type, list(self._out.shape), self._out.ctypes.data)
        if len(self._outputs) > 1:
            binding.bind_output(self._outputs[1], "cpu", 0, np.float32, list(self._std.shape), self._std.ctypes.data)
        self._binding = binding

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: Union[bytes, bytearray, memoryview], *, expected_obs_size: Optional[int] = None,
                   expected_action_size: Optional[int] = None, expected_model: Optional[str] = None) -> LocalPolicy:
        """Load and check an exported policy; raises :class:`PolicyError` if it cannot be used.

        The model runs on the CPU with one thread (acting on one observation is far too small to
        gain from more, and a robot's control loop should not compete with its own policy).
        Checked: that ONNX Runtime loads it, its ``agents_bar.*`` metadata (format, model, sizes,
        exploration), its input ``obs`` float32 ``[N, obs_size]`` and output ``action`` (int64
        ``[N]`` or float32 ``[N, action_size]``), the ``expected_*`` values given, and one trial run.
        Raises :class:`~agents_bar_stream.ConfigurationError` without numpy or onnxruntime.
        """
        np, ort = _runtime()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise PolicyError(f"a policy is ONNX model bytes, not {type(data).__name__}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: a rejected model is reported by the exception below
        try:
            session = ort.InferenceSession(bytes(data), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidProtobuf/... types
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise PolicyError(f"not a loadable ONNX policy ({len(data)} bytes): {detail}") from None
        meta = dict(session.get_modelmeta().custom_metadata_map)
        cls._check_metadata(meta)
        model = meta[_PREFIX + "model"]
        obs_size, action_size = _meta_int(meta, "obs_size"), _meta_int(meta, "action_size")
        for what, expected, actual in (("model", expected_model, model), ("obs_size", expected_obs_size, obs_size),
                                       ("action_size", expected_action_size, action_size)):
            if expected is not None and expected != actual:
                raise PolicyError(f"the policy is for {what} {actual!r}, not the expected {expected!r}")
        cls._check_graph(session, model, obs_size, action_size, meta)
        policy = cls(session, meta, _np=np)
        policy._trial_run()
        return policy

    @classmethod
    def from_file(cls, path: Union[str, Path], **expected: Any) -> LocalPolicy:
        """:meth:`from_bytes` of a file's contents (same keyword arguments)."""
        return cls.from_bytes(Path(path).read_bytes(), **expected)

    @staticmethod
    def _check_metadata(meta: Mapping[str, str]) -> None:
        fmt = meta.get(_PREFIX + "format")
        if fmt not in SUPPORTED_FORMATS:
            raise PolicyError(
                f"policy format {fmt!r} is not one this client reads ({', '.join(sorted(SUPPORTED_FORMATS))}); "
                "is it an agents_bar policy, and is the client up to date?"
            )
        model = meta.get(_PREFIX + "model")
        if model not in _EXPLORATION_KINDS:
            raise PolicyError(f"policy for unknown model {model!r}")
        _meta_int(meta, "obs_size")
        action_size = _meta_int(meta, "action_size")
        try:
            exploration = json.loads(meta.get(_PREFIX + "exploration", ""))
        except ValueError:
            raise PolicyError("policy metadata agents_bar.exploration is not JSON") from None
        kind = exploration.get("kind") if isinstance(exploration, dict) else None
        if kind != _EXPLORATION_KINDS[model]:
            raise PolicyError(f"a {model} policy explores by {_EXPLORATION_KINDS[model]}, this one says {kind!r}")
        try:
            if kind == "epsilon_greedy":
                if int(exploration["actions"]) != action_size:
                    raise PolicyError("policy exploration.actions differs from its action_size")
            else:
                low, high = (float(v) for v in exploration["clip"])
                if not (math.isfinite(low) and math.isfinite(high) and low < high):
                    raise PolicyError(f"policy action bounds {low}, {high} are not an interval")
                if kind == "gaussian":
                    values = [float(exploration[k]) for k in ("scale", "mean", "std")]
                    if not all(math.isfinite(v) for v in values) or values[2] < 0:
                        raise PolicyError(f"policy noise parameters {values} are not usable")
                elif not isinstance(exploration["std_output"], str):
                    raise PolicyError("policy exploration.std_output must name an output")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PolicyError):
                raise
            raise PolicyError(
                f"policy metadata agents_bar.exploration is incomplete: {type(exc).__name__} {exc}"
            ) from None

    @staticmethod
    def _check_graph(session: Any, model: str, obs_size: int, action_size: int, meta: Mapping[str, str]) -> None:
        inputs = session.get_inputs()
        if [i.name for i in inputs] != [_INPUT]:
            raise PolicyError(f"the policy's inputs are {[i.name for i in inputs]}, expected ['obs']")
        (obs,) = inputs
        if obs.type != "tensor(float)" or len(obs.shape) != 2 or obs.shape[1] != obs_size:
            raise PolicyError(
                f"the policy's input obs is {obs.type} {obs.shape}, expected tensor(float) [N, {obs_size}]"
            )
        if isinstance(obs.shape[0], int) and obs.shape[0] != 1:
            raise PolicyError(f"the policy's input obs has a fixed batch of {obs.shape[0]}")
        outputs = {o.name: o for o in session.get_outputs()}
        wanted = {_OUTPUT: ("tensor(int64)", 1) if model in _DISCRETE_MODELS else ("tensor(float)", 2)}
        if model == "ppo":
            wanted[json.loads(meta[_PREFIX + "exploration"])["std_output"]] = ("tensor(float)", 2)
        for name, (dtype, rank) in wanted.items():
            out = outputs.get(name)
            if out is None:
                raise PolicyError(f"the policy has no output {name!r} (it has {sorted(outputs)})")
            if out.type != dtype or len(out.shape) != rank or (rank == 2 and out.shape[1] != action_size):
                shape = "[N]" if rank == 1 else f"[N, {action_size}]"
                raise PolicyError(f"the policy's output {name} is {out.type} {out.shape}, expected {dtype} {shape}")

    def _trial_run(self) -> None:
        """Run once on zeros: a graph that loads can still fail on its first input."""
        try:
            with self._lock:
                self._session.run_with_iobinding(self._binding)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
            raise PolicyError(f"the policy fails on an observation of zeros: {str(exc).strip()[:300]}") from None
        self._check_output(self._out)

    # -- acting ------------------------------------------------------------------------------

    def act(self, obs: Observation, noise: float = 0.0, rng: Any = None) -> Action:
        """The action for one observation (``[obs_size]`` numbers): an int or a list of floats.

        ``noise`` explores as the server's ``act`` does for this model (see ``self.exploration``):
        epsilon-greedy for dqn/rainbow (with probability ``noise`` a uniform random action, and
        the network is not run), Gaussian noise scaled by ``noise`` and clipped to the bounds for
        ddpg, and for ppo a sample from the policy's own Gaussian with its standard deviation
        scaled by ``noise`` (1 is the server's distribution; the server itself ignores ``noise``).
        ``rng`` is a ``numpy.random.Generator`` (default: one of this policy's own).
        Raises :class:`PolicyError` for an observation of the wrong length, or not finite.
        """
        if noise:
            _check_noise(noise)
        np_isfinite = self._np.isfinite
        with self._lock:
            # The observation is checked even when a random action skips the network: a bad one
            # is a bug in the caller whatever the dice say.
            self._load(obs)
            if noise and self._kind == "epsilon_greedy":
                gen = self._rng if rng is None else rng
                if gen.random() < noise:
                    return int(gen.integers(self.action_size))
            self._session.run_with_iobinding(self._binding)
            if self.discrete:
                return int(self._out[0])
            if not np_isfinite(self._out).all():
                # Finite weights and observations can still overflow (an observation of 1e38).
                raise PolicyError("the policy answered a non-finite action for this observation")
            if noise:
                return self._explore(self._out, self._std, noise, rng)[0].tolist()  # type: ignore[no-any-return]
            return self._out[0].tolist()  # type: ignore[no-any-return]

    def act_batch(self, obs: Any, noise: float = 0.0, rng: Any = None) -> list[Action]:
        """The actions of a batch of observations (``[N, obs_size]``): one network run for all.

        Equal to ``[act(o, noise) for o in obs]`` in distribution (and exactly, with no noise).
        """
        np = self._np
        if noise:
            _check_noise(noise)
        try:
            batch = np.asarray(obs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"observations must be numbers: {exc}") from None
        if batch.ndim != 2 or batch.shape[1] != self.obs_size:
            raise PolicyError(f"observations must have shape [N, {self.obs_size}], not {list(batch.shape)}")
        if batch.shape[0] == 0:
            return []
        if not np.isfinite(batch).all():
            raise PolicyError("observations must be finite (no NaN or infinity)")
        outputs = self._session.run(self._outputs, {_INPUT: np.ascontiguousarray(batch)})
        action = outputs[0]
        gen = self._rng if rng is None else rng
        if self._kind == "epsilon_greedy":
            if noise:
                explore = gen.random(len(action)) < noise
                action = np.where(explore, gen.integers(self.action_size, size=len(action)), action)
            return [int(a) for a in action]
        if not np.isfinite(action).all():
            raise PolicyError("the policy answered a non-finite action for one of these observations")
        if noise:
            action = self._explore(action, outputs[1] if len(outputs) > 1 else None, noise, gen)
        return action.tolist()  # type: ignore[no-any-return]

    def _load(self, obs: Observation) -> None:
        """Copy one observation into the bound input array, refusing what numpy would broadcast."""
        np = self._np
        if isinstance(obs, np.ndarray):
            # A camera frame (84, 84, 4) is its elements in C order, as step() and the server read it
            # (issue 12); rows of obs_size numbers ((1, obs_size)) are a batch, for act_batch.
            if obs.size != self.obs_size or (obs.ndim > 1 and obs.shape[-1] == self.obs_size):
                raise PolicyError(f"an observation must have shape [{self.obs_size}] (or any shape of that many "
                                  f"values), not {list(obs.shape)}")
            obs = obs.reshape(-1)
        else:
            try:
                size = len(obs)
            except TypeError:
                raise PolicyError(
                    f"an observation is a sequence of {self.obs_size} numbers, not {type(obs).__name__}"
                ) from None
            if size != self.obs_size:
                raise PolicyError(f"an observation must have {self.obs_size} values, not {size}")
        try:
            self._input[0] = obs
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"an observation must be numbers: {exc}") from None
        if not np.isfinite(self._input).all():
            raise PolicyError("an observation must be finite (no NaN or infinity)")

    def _explore(self, action: Any, std: Any, noise: float, rng: Any) -> Any:
        """Continuous exploration of a batch of greedy actions, clipped to the action bounds."""
        np = self._np
        gen = self._rng if rng is None else rng
        exp = self.exploration
        if self._kind == "gaussian":
            # ai-traineree's DDPG: action + noise * scale * Normal(mean, std), then clamp.
            added = noise * exp["scale"] * gen.normal(exp["mean"], exp["std"], size=action.shape)
        else:
            added = noise * std * gen.standard_normal(size=action.shape)
        return np.clip(action + added, self.action_low, self.action_high).astype(np.float32)

    def _check_output(self, out: Any) -> None:
        np = self._np
        if self.discrete:
            if not ((out >= 0) & (out < self.action_size)).all():
                raise PolicyError(f"the policy answered actions outside 0..{self.action_size - 1}")
        elif not np.isfinite(out).all():
            raise PolicyError("the policy answered non-finite actions")

    def __repr__(self) -> str:
        return (f"<LocalPolicy {self.model} {self.obs_size}->{self.action_size} "
                f"version={self.version or '?'}>")


# --- keeping an agent's policy fresh (RemoteAgent's policy="local" | "auto") ----------------------

#: What a policy version may look like: it travels in ETags and in every step chosen locally.
_VERSION = re.compile(r"[A-Za-z0-9._:+-]{1,128}")
#: How long one background fetch may take (a model of a few MB on a slow link).
_FETCH_BUDGET = 30.0


def check_version(version: str) -> Optional[str]:
    """``version`` when it is a usable policy version (1-128 of ``[A-Za-z0-9._:+-]``), else None."""
    return version if isinstance(version, str) and _VERSION.fullmatch(version) else None


def _etag_version(etag: Optional[str]) -> Optional[str]:
    """The version an ETag names: ``"v"`` or ``W/"v"`` -> ``v``."""
    if not etag:
        return None
    tag = etag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"') or None


# Sources alive in this process, for the fork hook (weak: an agent garbage collected takes its own).
_LIVE: weakref.WeakSet[PolicySource] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for source in list(_LIVE):
        source.forked = True  # its thread does not exist here; the agent builds a new source


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PolicySource:
    """One agent's exported policy, fetched and kept fresh in the background. Built by RemoteAgent.

    ``expected()`` returns the ``expected_*`` keywords of :meth:`LocalPolicy.from_bytes` (the agent's
    sizes and model as far as they are known), so that a model for another agent is refused.
    Attributes read without a lock (each is replaced whole): ``policy`` (the model in use, or
    None), ``version``, ``confirmed_at`` (``time.monotonic()`` of the last answer that brought or
    confirmed the model in use), ``last_error``.
    """

    def __init__(self, session: Session, agent_name: str, *, interval: float,
                 expected: Callable[[], Mapping[str, Any]] = dict) -> None:
        self.pid = os.getpid()
        self.forked = False
        self.agent_name = agent_name
        self.interval = interval
        self._session = session
        self._path = f"/agents/{agent_name}/policy"
        self._expected = expected
        self.policy: Optional[LocalPolicy] = None
        self.version: Optional[str] = None
        self.confirmed_at: Optional[float] = None
        self.last_error: Optional[str] = None
        self._etag: Optional[str] = None
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._fetch_lock = threading.Lock()
        self._life = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self._refused: set[str] = set()
        self._absent_logged = False
        _LIVE.add(self)

    # -- life --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the refresh thread (its first fetch is at once); idempotent."""
        with self._life:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"agents-bar-stream-policy[{self.agent_name}]")
            self._thread.start()

    def poke(self) -> None:
        """Fetch again now rather than at the next interval (the agent's state changed)."""
        self._wake.set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (waiting up to ``timeout`` s for a fetch in flight); the model stays readable."""
        with self._life:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread() and not self.forked:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                self.fetch(time.monotonic() + _FETCH_BUDGET)
            except AgentsBarError as exc:
                # An outage, a refused token: the model in use stays; the next interval tries again.
                self.last_error = str(exc)
                logger.debug("policy of %r not refreshed: %s", self.agent_name, exc)
            except Exception:  # noqa: BLE001 - the thread must outlive a bug in one fetch
                logger.exception("policy refresh of %r failed", self.agent_name)
            self._wake.wait(self.interval)

    # -- fetching ----------------------------------------------------------------------------

    def wait(self, deadline: float) -> Optional[LocalPolicy]:
        """The model in use, waiting for the first one until ``deadline`` (``time.monotonic()``)."""
        policy = self.policy
        if policy is None:
            self._ready.wait(max(0.0, deadline - time.monotonic()))
            policy = self.policy
        return policy

    def fetch(self, deadline: float) -> bool:
        """One conditional GET of the policy; True when a new model was loaded and is now in use.

        ``304``: the model in use is current. ``404``: the server has no policy for this agent (no
        such extension, or no agent yet), logged once. A model that does not load is refused with
        a WARNING (once per version) and the previous one stays. Raises the session's errors
        (:class:`ServiceUnavailableError` for an outage or the deadline, ...).
        """
        if not self._fetch_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ServiceUnavailableError("the deadline passed while another policy fetch was under way")
        try:
            return self._fetch(deadline)
        finally:
            self._fetch_lock.release()

    def _fetch(self, deadline: float) -> bool:
        headers = {"Accept": "application/onnx, application/json"}
        if self._etag is not None and self.policy is not None:
            headers["If-None-Match"] = self._etag
        response = self._session.request("GET", self._path, headers=headers, deadline=deadline)
        if response.status == 304:
            self.confirmed_at = time.monotonic()
            self.last_error = None
            return False
        if response.status == 404:
            self.last_error = f"GET {self._path} answered 404 ({response.detail()[:120]})"
            if not self._absent_logged:
                self._absent_logged = True
                logger.info("the server has no policy for agent %r yet (%s); acting locally waits for one",
                            self.agent_name, self.last_error)
            return False
        response.raise_for_status()
        return self.load(response.content, response.headers.get("ETag"))

    def load(self, data: bytes, etag: Optional[str] = None) -> bool:
        """Check ``data`` (a model's bytes, as ``GET .../policy`` answers them) and put it in use.

        True when it is a new version; False when it is the version in use, or refused (a WARNING
        once per version; the previous model stays in use).
        """
        size = len(data)
        try:
            policy = LocalPolicy.from_bytes(data, **self._expected())
            version = check_version(policy.version or _etag_version(etag) or "")
            if version is None:
                raise PolicyError(f"the policy's version {policy.version!r} (ETag {etag!r}) is not a usable version")
        except PolicyError as exc:
            key = _etag_version(etag) or f"{size} bytes"
            self.last_error = f"policy {key} refused: {exc}"
            if key not in self._refused:
                self._refused.add(key)
                logger.warning("policy %s of agent %r refused, %s: %s", key, self.agent_name,
                               "keeping " + repr(self.version) if self.policy is not None else "none in use yet", exc)
            return False
        changed = version != self.version
        self.policy, self.version, self._etag = policy, version, etag or f'"{version}"'
        self.confirmed_at = time.monotonic()
        self.last_error = None
        self._ready.set()
        if changed:
            logger.info("agent %r acts locally with policy %s", self.agent_name, version)
        return changed

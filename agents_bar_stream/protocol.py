"""Wire types of the Agents Bar protocol (``docs/protocol.md``) and their checks.

Both sides import this module: the client to validate a transition before queueing it, the server
to validate what arrives. It depends on the standard library and orjson only.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import orjson

from agents_bar_stream.exceptions import InvalidStepError
from agents_bar_stream.wire import DTYPE_NAMES, array_item, check_frame, dtype_key, is_array

__all__ = [
    "API_PREFIX",
    "DISCRETE_MODELS",
    "MAX_MAGNITUDE",
    "PROTOCOL_VERSION",
    "SUPPORTED_MODELS",
    "StepEncoder",
    "UnconfirmedShapeError",
    "agent_obs_shape",
    "agent_sizes",
    "check_numbers",
    "encode_observation",
    "is_discrete",
    "is_valid_agent_name",
    "is_valid_producer_id",
    "validate_step",
]

#: Version of Part 2 (the streaming extension) that this package speaks.
PROTOCOL_VERSION = 1
#: Every path of the API lives under ``{base_url}{API_PREFIX}``.
API_PREFIX = "/api/v1"
#: Models a server must offer, in the order the published client lists them.
SUPPORTED_MODELS = ["dqn", "ppo", "ddpg", "rainbow"]
#: Models whose action is one integer in ``[0, action_size)``; the others take ``action_size`` floats.
DISCRETE_MODELS = frozenset({"dqn", "rainbow"})
#: The largest magnitude a number of a step may have: float32's largest finite value. Learners
#: compute in float32, where anything larger is infinite; such a step would pass a JSON check and
#: then poison the agent's weights and replay priorities for good.
MAX_MAGNITUDE = 3.4028234663852886e38

_PRODUCER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Agent names end up in URLs and log lines, never in file paths; still, refuse anything that could be
# read as a path or needs escaping, so that a name means the same thing everywhere.
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")



def __getattr__(name: str) -> Any:
    # StepInvalid was a second name of InvalidStepError; it stays importable (PEP 562), with a warning.
    if name == "StepInvalid":
        warnings.warn("agents_bar_stream.protocol.StepInvalid is deprecated: use "
                      "agents_bar_stream.exceptions.InvalidStepError", DeprecationWarning, stacklevel=2)
        return InvalidStepError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_valid_producer_id(value: object) -> bool:
    return isinstance(value, str) and _PRODUCER_ID.fullmatch(value) is not None


def is_valid_agent_name(value: object) -> bool:
    return isinstance(value, str) and _AGENT_NAME.fullmatch(value) is not None and ".." not in value


def is_discrete(model: str) -> bool:
    return model.lower() in DISCRETE_MODELS


def agent_sizes(info: Any) -> tuple[int | None, int | None, bool | None]:
    """``(obs_size, action_size, discrete)`` of an agent's details (``GET /agents/{name}``); None where unknown.

    The config's ``obs_size``/``action_size`` (or the older ``obs_space``/``action_space``, which the
    published client also reads).
    """
    if not isinstance(info, Mapping):
        return None, None, None
    config = info.get("config")
    if not isinstance(config, Mapping):
        config = {}
    sizes = []
    for key, old in (("obs_size", "obs_space"), ("action_size", "action_space")):
        v = config.get(key, config.get(old))
        sizes.append(v if type(v) is int and v > 0 else None)
    model = info.get("model")
    discrete = is_discrete(model) if isinstance(model, str) else None
    return sizes[0], sizes[1], discrete


def agent_obs_shape(info: Any) -> tuple[int, ...] | None:
    """The observation shape an agent's config declares (``obs_shape``: a list of positive ints), else None."""
    config = info.get("config") if isinstance(info, Mapping) else None
    shape = config.get("obs_shape") if isinstance(config, Mapping) else None
    if type(shape) is list and shape and all(type(n) is int and n > 0 for n in shape):
        return tuple(shape)
    return None


def check_numbers(name: str, value: Any, size: int | None) -> None:
    """Check a wire vector: a list of ``size`` (when given) JSON numbers within MAX_MAGNITUDE."""
    if type(value) is not list:
        raise InvalidStepError(f"{name} must be a list of numbers, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidStepError(f"{name} must have {size} numbers, got {len(value)}")
    for i, v in enumerate(value):
        # type() rather than isinstance(): a JSON true/false decodes to bool, a subclass of int,
        # and must not pass as a number. Integers need no range check: orjson reads anything past
        # 64 bits as a float, and every 64-bit integer is within MAX_MAGNITUDE.
        t = type(v)
        if t is float:
            if not -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE:  # also false for NaN
                raise InvalidStepError(f"{name}[{i}] {_not_finite(v)}")
        elif t is not int:
            raise InvalidStepError(f"{name}[{i}] must be a number, got {t.__name__}")


def validate_step(
    step: Any,
    *,
    obs_size: int | None = None,
    action_size: int | None = None,
    discrete: bool | None = None,
) -> None:
    """Check one wire step (``{"obs", "action", "reward", "next_obs", "done"}`` of plain JSON values).

    Sizes and ``discrete`` are checked when given. Raises :class:`InvalidStepError` with a message that
    names the field; unknown extra fields are allowed (the protocol says servers ignore them).
    """
    if not isinstance(step, Mapping):
        raise InvalidStepError(f"a step must be an object, got {type(step).__name__}")
    for key in ("obs", "action", "reward", "next_obs", "done"):
        if key not in step:
            raise InvalidStepError(f"step is missing '{key}'")
    check_numbers("obs", step["obs"], obs_size)
    check_numbers("next_obs", step["next_obs"], obs_size)
    action = step["action"]
    if discrete:
        if type(action) is not list or len(action) != 1 or type(action[0]) is not int:
            raise InvalidStepError(f"action of a discrete agent must be [integer], got {action!r:.80}")
        if action_size is not None and not 0 <= action[0] < action_size:
            raise InvalidStepError(f"action {action[0]} is out of range [0, {action_size})")
    else:
        check_numbers("action", action, action_size if discrete is not None else None)
    reward = step["reward"]
    if type(reward) is float:
        if not -MAX_MAGNITUDE <= reward <= MAX_MAGNITUDE:
            raise InvalidStepError(f"reward {_not_finite(reward)}")
    elif type(reward) is not int:
        raise InvalidStepError(f"reward must be a number, got {type(reward).__name__}")
    if type(step["done"]) is not bool:
        raise InvalidStepError(f"done must be true or false, got {type(step['done']).__name__}")


# --- the client's side: user values -> wire bytes ------------------------------------------------

_NUMBER_TYPES = (int, float)
# Numpy observations of fewer elements than this go as JSON lists (see StepEncoder.encode); larger ones
# as raw bytes. Measured (bench/bench_arrays.py): below ~64 float32s a list is cheaper in step().
_INLINE_BELOW = 64


class UnconfirmedShapeError(InvalidStepError):
    """A step whose shape disagrees with what the encoder learnt from earlier steps only, the
    agent's own sizes being unknown yet: the earlier steps may be the wrong ones (issue 14)."""


def _is_array_bool(value: Any) -> bool:
    """numpy's bool scalar (``numpy.bool_``, named ``bool`` in numpy 2), told apart without importing numpy."""
    return getattr(getattr(value, "dtype", None), "kind", None) == "b"


def _plain_vector(name: str, value: Any) -> list:
    """A flat list of int/float from a list, tuple, numpy array or scalar, without a per-element copy
    in the common cases (a list of floats is used as it is; numpy does its own ``tolist``)."""
    t = type(value)
    if t is list:
        vec = value
    elif t is tuple:
        vec = list(value)
    elif hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        if getattr(value, "ndim", 1) > 1:
            if not is_array(value):
                raise InvalidStepError(_not_flat(name, tuple(value.shape)))
            value = value.ravel()  # a numpy array of any shape is its elements in C order (issue 12)
        vec = value.tolist()
        if type(vec) is not list:
            vec = [vec]
    else:
        raise InvalidStepError(f"{name} must be a list, tuple or array of numbers, got {t.__name__}")
    for e in vec:
        if type(e) not in _NUMBER_TYPES:
            return _slow_vector(name, vec)
    return vec


def _slow_vector(name: str, vec: list) -> list:
    out = []
    for i, e in enumerate(vec):
        t = type(e)
        if t is int or t is float:
            out.append(e)
        elif t is bool or _is_array_bool(e):
            raise InvalidStepError(f"{name}[{i}] is a bool, not a number")
        elif hasattr(e, "item") and not hasattr(e, "__len__"):  # a numpy scalar inside a list
            item = e.item()
            if type(item) not in _NUMBER_TYPES:
                raise InvalidStepError(f"{name}[{i}] must be a number, got {t.__name__}")
            out.append(item)
        elif isinstance(e, (list, tuple)) or (hasattr(e, "__len__") and not isinstance(e, (str, bytes))):
            raise InvalidStepError(_not_flat(name, _shape(vec)))
        else:
            raise InvalidStepError(f"{name}[{i}] must be a number, got {t.__name__}")
    return out


def _shape(value: Any) -> tuple:
    """The shape of nested sequences, read along the first element of each level."""
    shape = []
    while isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        shape.append(len(value))
        if not len(value):
            break
        value = value[0]
    return tuple(shape)


def _not_flat(name: str, shape: tuple) -> str:
    return (f"{name} must be a flat sequence of numbers; got a nested ({len(shape)}-D) value of shape {shape}: "
            "flatten it (e.g. numpy's .ravel())")


def _plain_done(done: Any) -> bool:
    if done is True or done is False:
        return done
    if not _is_array_bool(done) or getattr(done, "ndim", 1) != 0:
        raise InvalidStepError(f"done must be a bool, got {type(done).__name__}")
    return bool(done)


def _plain_number(name: str, value: Any) -> float:
    t = type(value)
    if t is float or t is int:
        return value
    if t is bool or _is_array_bool(value):
        raise InvalidStepError(f"{name} must be a number, got a bool")
    if hasattr(value, "item"):
        item = value.item()
        if type(item) in _NUMBER_TYPES:
            return item
    raise InvalidStepError(f"{name} must be a number, got {t.__name__}")


class StepEncoder:
    """Validates transitions the way the server will and turns them into wire bytes.

    It learns the observation length and the kind of action (discrete or continuous, and its
    length) from the agent's model when known, else from the first step, and then holds every
    later step to them, so that a bad transition fails in ``step()`` rather than hours later on
    the server. Not thread-safe by itself: the caller serializes calls.

    ``confirmed`` says the sizes are the agent's own (read from the server). Until then they are a
    guess, and a step that disagrees with it raises :class:`UnconfirmedShapeError`, so that the
    caller can ask the server which of the two is right (:meth:`confirm`) instead of holding every
    later step to a wrong first one.
    """

    __slots__ = ("obs_size", "action_size", "discrete", "confirmed", "obs_shape", "obs_dtype", "_np_dtype")

    def __init__(self, *, obs_size: int | None = None, action_size: int | None = None,
                 discrete: bool | None = None, confirmed: bool = False,
                 obs_shape: tuple[int, ...] | None = None) -> None:
        self.obs_size = obs_size
        self.action_size = action_size
        self.discrete = discrete
        self.confirmed = confirmed
        # Numpy observations (issue 12): the shape is the agent's (its config's obs_shape) or the
        # first accepted array step's, the dtype the first accepted array step's; later array steps
        # are held to both. Lists carry neither and are checked by their length only.
        self.obs_shape = obs_shape
        self.obs_dtype: str | None = None
        self._np_dtype: Any = None  # numpy's dtype object of obs_dtype: an identity test on the fast path

    def confirm(self, obs_size: int | None, action_size: int | None, discrete: bool | None,
                obs_shape: tuple[int, ...] | None = None) -> None:
        """The agent's own sizes and kind: they replace whatever was learnt from steps."""
        if obs_shape is not None:
            self.obs_shape = obs_shape
        elif obs_size is not None and obs_size != self.obs_size:
            self.obs_shape = None  # learnt from steps of another size: the agent's size wins
        if obs_size is not None:
            self.obs_size = obs_size
        if discrete is not None:
            self.discrete = discrete
        if action_size is not None or discrete is not None:
            self.action_size = action_size
        self.confirmed = obs_size is not None and discrete is not None

    def snapshot(self) -> tuple:
        """What the encoder has learnt, for :meth:`restore`: a batch refused in its middle teaches nothing."""
        return tuple(getattr(self, name) for name in self.__slots__)

    def restore(self, state: tuple) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)

    def _shape_error(self, message: str) -> InvalidStepError:
        if self.confirmed:
            return InvalidStepError(message)
        return UnconfirmedShapeError(message + " (learnt from earlier steps; the agent's own size is not known yet)")

    def encode(self, obs: Any, action: Any, reward: Any, next_obs: Any, done: Any,
               policy_version: str | None = None) -> bytes:
        """The step's wire bytes; ``policy_version`` (the version of the local policy that chose the
        action, issue 11) is added as a field only when given: a step of a remote act() is unchanged."""
        spec = None
        if type(obs) is list:  # the usual list step: exactly as before arrays existed (issue 12)
            obs_v = _plain_vector("obs", obs)
            next_v = _plain_vector("next_obs", next_obs)
        else:
            np = sys.modules.get("numpy")
            if np is not None and type(obs) is np.ndarray and type(next_obs) is np.ndarray:
                if obs.size >= _INLINE_BELOW:
                    return self._encode_arrays(obs, action, reward, next_obs, done, policy_version)
                # A small array (CartPole's 4 floats) is cheaper as a JSON list than as raw bytes with
                # a reference: numpy's per-call costs (min/max, a header) are more than the values'
                # own. Its shape and dtype are held all the same; the values are the same.
                spec = self._array_spec(obs, next_obs)
                if obs.ndim == 1:
                    obs_v = obs.tolist()
                    next_v = next_obs.tolist()
                else:
                    obs_v = obs.ravel().tolist()
                    next_v = next_obs.ravel().tolist()
            else:
                obs_v = _plain_vector("obs", obs)
                next_v = _plain_vector("next_obs", next_obs)
        size = self.obs_size
        if size is None:
            size = len(obs_v)
        if len(obs_v) != size or len(next_v) != size:
            if len(obs_v) != len(next_v) or self.obs_size is None:  # inconsistent within this step
                raise InvalidStepError(
                    f"obs and next_obs must have the same length, got {len(obs_v)} and {len(next_v)}")
            raise self._shape_error(
                f"obs and next_obs must have {size} numbers (the agent's observation size), "
                f"got {len(obs_v)} and {len(next_v)}")
        action_v, discrete = self._action(action)
        reward = _plain_number("reward", reward)
        if done is not True and done is not False:
            done = _plain_done(done)
        try:
            data = orjson.dumps({"obs": obs_v, "action": action_v, "reward": reward, "next_obs": next_v, "done": done})
        except TypeError:  # orjson's JSONEncodeError: an integer beyond 64 bits
            raise InvalidStepError(_which_non_finite(obs_v, action_v, reward, next_v)) from None
        # orjson writes NaN and infinities as null, and no other value here can become null; it
        # writes a float of 1e16 or more with "e+". Two substring searches at C speed therefore
        # clear every number of an ordinary step; only a step with a huge value is looked at
        # closely. (find(), not `in`: bytes.__contains__ first tries its argument as an integer
        # and pays for a TypeError each time.)
        if data.find(b"null") >= 0 or (data.find(b"e+") >= 0 and not _all_in_range(obs_v, action_v, reward, next_v)):
            raise InvalidStepError(_which_non_finite(obs_v, action_v, reward, next_v))
        if not obs_v and size == 0:
            raise InvalidStepError("obs must not be empty")
        # Learnt only once the whole step is known to be good: a refused step teaches nothing.
        self.obs_size = size
        if spec is not None:
            self._learn_array(obs, spec)
        self.discrete = discrete
        if not discrete:
            self.action_size = len(action_v)
        if policy_version is not None:
            # Appended after the number checks above (a version is text, never a number to check);
            # the caller has checked it is a short printable string (policy.check_version).
            return data[:-1] + b',"policy_version":' + orjson.dumps(policy_version) + b"}"
        # orjson hands back its 4 KiB output buffer as the bytes object; a step waiting in memory
        # for the group commit would hold 4 KiB for its ~200 bytes (1.7 GB for a 400k backlog);
        # a right-sized copy is far cheaper than that memory.
        return bytes(memoryview(data))

    def _array_spec(self, obs: Any, next_obs: Any) -> tuple[str, tuple[int, ...]] | None:
        """The dtype string and shape of a step's two arrays, held to the agent's (or earlier steps');
        None when they are those of the last accepted array step (the usual case: nothing to learn)."""
        shape = obs.shape
        dt = self._np_dtype
        if dt is not None and obs.dtype is dt and next_obs.dtype is dt and shape == self.obs_shape == next_obs.shape:
            return None  # the usual step: as the last one, nothing to learn
        if next_obs.shape != shape:
            raise InvalidStepError(f"obs and next_obs must have the same shape, got {shape} and {next_obs.shape}")
        key = dtype_key("obs", obs)
        if dtype_key("next_obs", next_obs) != key:
            raise InvalidStepError(f"obs and next_obs must have the same dtype, got {obs.dtype} and {next_obs.dtype}")
        if self.obs_shape is not None and shape != self.obs_shape:
            raise self._shape_error(f"obs has shape {shape}, expected {self.obs_shape}")
        if self.obs_dtype is not None and key != self.obs_dtype:
            raise InvalidStepError(f"obs has dtype {DTYPE_NAMES[key]}, expected {DTYPE_NAMES[self.obs_dtype]} "
                                   "(the dtype of the earlier array steps)")
        return key, shape

    def _learn_array(self, obs: Any, spec: tuple[str, tuple[int, ...]]) -> None:
        if self.obs_shape is None:
            self.obs_shape = spec[1]
        self.obs_dtype = spec[0]
        # Only a native little-endian dtype is taken for the identity test of the fast path.
        self._np_dtype = obs.dtype if obs.dtype.str == spec[0] else None

    def _encode_arrays(self, obs: Any, action: Any, reward: Any, next_obs: Any, done: Any,
                       policy_version: str | None) -> bytes:
        """An array step's queued bytes: checked at C speed, its arrays copied once as raw bytes (issue 12)."""
        size = obs.size
        if self.obs_size is not None and size != self.obs_size:
            raise self._shape_error(f"obs and next_obs must have {self.obs_size} numbers (the agent's observation "
                                    f"size), got shape {obs.shape} ({size} numbers)")
        spec = self._array_spec(obs, next_obs)
        key = check_frame("obs", obs)
        check_frame("next_obs", next_obs)
        action_v, discrete = self._action(action)
        reward = _plain_number("reward", reward)
        done = _plain_done(done)
        try:
            check = orjson.dumps([action_v, reward])
        except TypeError:  # an integer beyond 64 bits
            raise InvalidStepError(_which_non_finite([], action_v, reward, [])) from None
        if check.find(b"null") >= 0 or (check.find(b"e+") >= 0 and not _all_in_range([], action_v, reward, [])):
            raise InvalidStepError(_which_non_finite([], action_v, reward, []))
        item = array_item(obs, next_obs, key, action_v, reward, done, policy_version)
        # Learnt only once the whole step is known to be good, as for lists.
        self.obs_size = size
        if spec is not None:
            self._learn_array(obs, spec)
        self.discrete = discrete
        if not discrete:
            self.action_size = len(action_v)
        return item

    def _action(self, action: Any) -> tuple[list, bool]:
        """The wire action and whether it is discrete; changes nothing on self."""
        discrete = self.discrete
        if discrete and type(action) is int and 0 <= action and (self.action_size is None or action < self.action_size):
            return [action], True  # the usual discrete step, without the general checks below
        if discrete is None:
            # The model is unknown: an integer (or [integer]) means a discrete agent; the first step decides.
            t = type(action)
            discrete = t is int or (t is not bool and hasattr(action, "__index__") and not hasattr(action, "__len__"))
            if not discrete and t is list and len(action) == 1 and type(action[0]) is int:
                discrete = True
        if discrete:
            a = action
            if type(a) in (list, tuple) and len(a) == 1:
                a = a[0]
            elif hasattr(a, "tolist") and not isinstance(a, (int, float)):
                a = a.tolist()
                if type(a) is list and len(a) == 1:
                    a = a[0]
            if type(a) is bool or type(a) is not int:
                if type(a) is not bool and hasattr(a, "__index__"):
                    a = a.__index__()
                elif self.discrete is not None and type(a) is not bool:
                    raise self._shape_error(f"action of a discrete agent must be one integer, got {action!r:.60}")
                else:
                    raise InvalidStepError(
                        f"action of a discrete agent must be one integer, got {action!r:.60}")
            if a < 0 or (self.action_size is not None and a >= self.action_size):
                bound = f"[0, {self.action_size})" if self.action_size is not None else ">= 0"
                raise InvalidStepError(f"action {a} is out of range {bound}")
            return [a], True
        vec = _plain_vector("action", action)
        if self.action_size is not None and len(vec) != self.action_size:
            raise self._shape_error(f"action must have {self.action_size} numbers, got {len(vec)}")
        if not vec:
            raise InvalidStepError("action must not be empty")
        return vec, False


def encode_observation(obs: Any, size: int | None = None) -> bytes:
    """The JSON body of ``act``: a flat list of finite numbers (of ``size`` when known)."""
    vec = _plain_vector("obs", obs)
    if not vec:
        raise InvalidStepError("obs must not be empty")
    if size is not None and len(vec) != size:
        raise InvalidStepError(f"obs must have {size} numbers (the agent's observation size), got {len(vec)}")
    try:
        data = orjson.dumps(vec)
    except TypeError:  # an integer beyond 64 bits
        raise InvalidStepError(_which_non_finite(vec, [], 0.0, [])) from None
    if data.find(b"null") >= 0 or (data.find(b"e+") >= 0 and not _all_in_range(vec, [], 0.0, [])):
        raise InvalidStepError(_which_non_finite(vec, [], 0.0, []))
    return data


def _not_finite(v: Any) -> str:
    if type(v) is float and math.isnan(v):
        return "is not a number (NaN)"
    if type(v) is int:
        return f"is an integer beyond 64 bits ({v:.6g}), which JSON numbers here cannot carry"
    return f"is out of range ({v:.6g}): numbers must be finite and at most {MAX_MAGNITUDE:.4g} in magnitude (float32)"


def _in_range(v: Any) -> bool:
    return -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE and (type(v) is not int or -(2**63) <= v < 2**64)


def _all_in_range(obs: list, action: list, reward: float, next_obs: list) -> bool:
    return (all(map(_in_range, obs)) and all(map(_in_range, action)) and _in_range(reward)
            and all(map(_in_range, next_obs)))


def _which_non_finite(obs: list, action: list, reward: float, next_obs: list) -> str:
    for name, vec in (("obs", obs), ("action", action), ("reward", [reward]), ("next_obs", next_obs)):
        for i, v in enumerate(vec):
            if not _in_range(v):
                where = name if name == "reward" else f"{name}[{i}]"
                return f"{where} {_not_finite(v)}"
    return "a value is not a finite number"

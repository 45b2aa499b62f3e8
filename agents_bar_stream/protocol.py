"""Wire types of the Agents Bar protocol (``docs/protocol.md``) and their checks.

Both sides import this module: the client to validate a transition before queueing it, the server
to validate what arrives. It depends on the standard library and orjson only.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

__all__ = [
    "API_PREFIX",
    "DISCRETE_MODELS",
    "PROTOCOL_VERSION",
    "SUPPORTED_MODELS",
    "StepInvalid",
    "is_valid_agent_name",
    "is_valid_producer_id",
    "is_discrete",
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

_PRODUCER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Agent names end up in URLs and log lines, never in file paths; still, refuse anything that could be
# read as a path or needs escaping, so that a name means the same thing everywhere.
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class StepInvalid(ValueError):
    """A step that can never be accepted; the message says which field and why."""


def is_valid_producer_id(value: object) -> bool:
    return isinstance(value, str) and _PRODUCER_ID.fullmatch(value) is not None


def is_valid_agent_name(value: object) -> bool:
    return isinstance(value, str) and _AGENT_NAME.fullmatch(value) is not None and ".." not in value


def is_discrete(model: str) -> bool:
    return model.lower() in DISCRETE_MODELS


def _check_vector(name: str, value: Any, size: Optional[int]) -> None:
    if type(value) is not list:
        raise StepInvalid(f"{name} must be a list of numbers, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise StepInvalid(f"{name} must have {size} numbers, got {len(value)}")
    for i, v in enumerate(value):
        # type() rather than isinstance(): a JSON true/false decodes to bool, a subclass of int,
        # and must not pass as a number.
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                raise StepInvalid(f"{name}[{i}] is not finite ({v})")
        elif t is not int:
            raise StepInvalid(f"{name}[{i}] must be a number, got {t.__name__}")


def validate_step(
    step: Any,
    *,
    obs_size: Optional[int] = None,
    action_size: Optional[int] = None,
    discrete: Optional[bool] = None,
) -> None:
    """Check one wire step (``{"obs", "action", "reward", "next_obs", "done"}`` of plain JSON values).

    Sizes and ``discrete`` are checked when given. Raises :class:`StepInvalid` with a message that
    names the field; unknown extra fields are allowed (the protocol says servers ignore them).
    """
    if not isinstance(step, Mapping):
        raise StepInvalid(f"a step must be an object, got {type(step).__name__}")
    for key in ("obs", "action", "reward", "next_obs", "done"):
        if key not in step:
            raise StepInvalid(f"step is missing '{key}'")
    _check_vector("obs", step["obs"], obs_size)
    _check_vector("next_obs", step["next_obs"], obs_size)
    action = step["action"]
    if discrete:
        if type(action) is not list or len(action) != 1 or type(action[0]) is not int:
            raise StepInvalid(f"action of a discrete agent must be [integer], got {action!r:.80}")
        if action_size is not None and not 0 <= action[0] < action_size:
            raise StepInvalid(f"action {action[0]} is out of range [0, {action_size})")
    else:
        _check_vector("action", action, action_size if discrete is not None else None)
    reward = step["reward"]
    if type(reward) is float:
        if not math.isfinite(reward):
            raise StepInvalid(f"reward is not finite ({reward})")
    elif type(reward) is not int:
        raise StepInvalid(f"reward must be a number, got {type(reward).__name__}")
    if type(step["done"]) is not bool:
        raise StepInvalid(f"done must be true or false, got {type(step['done']).__name__}")

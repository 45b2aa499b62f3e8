"""The published client's ``agents_bar.agents`` module, over this package's :class:`Client`.

Programs written for ``agents-bar`` 0.4.2 that call these functions directly keep working after
``from agents_bar import agents`` becomes ``from agents_bar_stream import agents``. Each function is
one synchronous request, as in the published client (``step`` here does not go through the
streaming queue: use :class:`RemoteAgent` for that). Errors are this package's own: an error answer
raises the matching :class:`APIError` (:class:`AgentNotFoundError` for a 404, ...), never
``requests``' ``HTTPError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from agents_bar_stream.client import Client
from agents_bar_stream.exceptions import ConfigurationError
from agents_bar_stream.protocol import is_valid_agent_name
from agents_bar_stream.transport import Response

__all__ = ["AGENTS_PREFIX", "act", "create", "delete", "get", "get_loss", "get_many", "step"]

AGENTS_PREFIX = "/agents"


def _request(client: Client, method: str, path: str, body: Any = None,
             params: Mapping[str, Any] | None = None) -> Response:
    if not isinstance(client, Client):
        raise ConfigurationError(f"client must be an agents_bar_stream.Client, got {type(client).__name__}")
    raw = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return client.request(method, path, body=raw, params=params).raise_for_status()


def _agent_path(agent_name: str, suffix: str = "") -> str:
    if not is_valid_agent_name(agent_name):
        raise ConfigurationError(
            "agent_name must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit, "
            f"got {agent_name!r}")
    return f"{AGENTS_PREFIX}/{agent_name}{suffix}"


def get_many(client: Client) -> list[dict]:
    """The agents of the authenticated user."""
    return _request(client, "GET", f"{AGENTS_PREFIX}/").json()


def get(client: Client, agent_name: str) -> dict:
    """The details of one agent; :class:`AgentNotFoundError` when there is no such agent."""
    return _request(client, "GET", _agent_path(agent_name)).json()


def create(client: Client, config: dict) -> dict:
    """Create an agent; ``config`` is the whole request: ``{"name", "model", "description", "config", "is_active"}``.

    Returns the created agent's details; :class:`AgentExistsError` when the name is taken.
    """
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"config must be a mapping (name, model, description, config, is_active), got {config!r:.60}")
    return _request(client, "POST", f"{AGENTS_PREFIX}/", dict(config)).json()


def delete(client: Client, agent_name: str) -> bool:
    """Delete an agent; True when the service deleted it. :class:`AgentNotFoundError` when there is none."""
    return _request(client, "DELETE", _agent_path(agent_name)).status == 202


def get_loss(client: Client, agent_name: str) -> dict:
    """The agent's recent loss metrics."""
    return _request(client, "GET", _agent_path(agent_name, "/loss")).json()


def step(client: Client, agent_name: str, step: dict) -> None:
    """Send one step synchronously: ``step`` is ``{"step_data": {"obs", "action", "reward", "next_obs", "done"}}``."""
    _request(client, "POST", _agent_path(agent_name, "/step"), step)


def act(client: Client, agent_name: str, obs: Any, params: dict | None = None) -> dict:
    """The agent's answer to ``obs`` (a flat list of numbers): ``{"action": [...]}``.

    ``params`` are the query's, e.g. ``{"noise": 0.1}``.
    """
    return _request(client, "POST", _agent_path(agent_name, "/act"), obs, params=params).json()

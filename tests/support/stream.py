"""Helpers of the streaming tests: observations that carry their index, and reading them back."""

from __future__ import annotations

from support.api import Api, login


def obs_of(i: int, run: int = 0) -> list:
    """An observation that carries its step's index (and a run id) so the server's log can be checked."""
    return [float(i), float(run), 0.5, -0.5]


def indices(log: list, run: int | None = None) -> list:
    """The step indices, in the server's order, of a log from ``Api.log``."""
    return [int(e["step"]["obs"][0]) for e in log if run is None or int(e["step"]["obs"][1]) == run]


def api_for(server, user) -> Api:
    """A logged-in ``Api`` on ``server`` (anything with ``.url``)."""
    return Api(server.url, login(server.url, *user))

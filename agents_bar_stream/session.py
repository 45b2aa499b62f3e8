"""Authenticated requests to one service: the access token, login, one re-login on ``401``, deadlines.

``Session`` sits between the :class:`~agents_bar_stream.transport.Transport` (HTTP, errors
translated) and its users: the public :class:`~agents_bar_stream.client.Client` facade, and the
background flusher, which is handed the session and never the client. It is safe to share between
threads: one lock serialises logins, and a thread with a deadline never waits out another thread's
login for longer than its deadline allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from agents_bar_stream.config import DEFAULT_BASE_URL, Timeouts
from agents_bar_stream.exceptions import (
    APIError,
    AuthenticationError,
    ClosedError,
    ServiceUnavailableError,
    WrongServiceError,
)
from agents_bar_stream.protocol import API_PREFIX
from agents_bar_stream.transport import Response, Transport

__all__ = ["DeadlinePassed", "Session", "bounded"]

logger = logging.getLogger(__name__)


class DeadlinePassed(ServiceUnavailableError):
    """No time was left for another attempt; says nothing of why the earlier ones failed."""


def bounded(timeout: tuple | None, deadline: float | None, connect: float) -> tuple | None:
    """``timeout`` cut to what is left before ``deadline``; raises :class:`DeadlinePassed` when nothing is left."""
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlinePassed("the deadline passed")
    if timeout is None:
        return (min(connect, remaining), remaining)
    return (min(timeout[0], remaining), min(timeout[1], remaining))


class _AuthLock:
    """``with``: the session's login lock, waited for until a deadline at most."""

    __slots__ = ("lock", "deadline")

    def __init__(self, lock: threading.Lock, deadline: float | None) -> None:
        self.lock = lock
        self.deadline = deadline

    def __enter__(self) -> None:
        wait = -1.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if not self.lock.acquire(timeout=wait):
            raise DeadlinePassed("the deadline passed while another thread was logging in")

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


class Session:
    """Requests to ``{base_url}/api/v1`` as one user.

    ``access_token`` is used as it is; with ``username`` and ``password`` the session logs in on
    first use and once more whenever the server answers ``401``. The token and the password are
    never logged. ``transport`` defaults to a :class:`Transport` for ``base_url``; tests pass one
    that plays the server's answers.
    """

    def __init__(self, base_url: str, *, username: str | None = None, password: str | None = None,
                 access_token: str | None = None, timeouts: Timeouts = Timeouts(),
                 transport: Transport | None = None) -> None:
        self.base_url = base_url
        self.username = username
        self.__password = password
        self.__token = access_token
        self._auth_lock = threading.Lock()
        self.transport = transport if transport is not None else Transport(base_url + API_PREFIX, timeouts=timeouts)
        # A plain attribute, not a property: RemoteAgent.step() reads it on its fast path.
        self.closed = False

    @property
    def can_login(self) -> bool:
        return bool(self.username and self.__password)

    def login(self, timeout: tuple | None = None) -> None:
        """Exchange the credentials for a fresh access token now (``timeout``: (connect, read) seconds).

        Raises :class:`AuthenticationError` when the server refuses them, :class:`WrongServiceError`
        when ``base_url`` does not answer as an Agents Bar.
        """
        if not self.can_login:
            raise AuthenticationError("the access token was refused and there are no credentials to log in again")
        assert self.username is not None and self.__password is not None
        response = self.transport.request(
            "POST", "/login/access-token", form={"username": self.username, "password": self.__password},
            timeout=timeout)
        if response.status in (400, 401, 403):
            raise AuthenticationError(
                f"the server refused the credentials of {self.username!r}: {response.detail()}", status=response.status)
        if response.status in (404, 405, 501):
            # Every Agents Bar has this endpoint: no such path means the address is wrong (a wrong
            # path after the host, or some other web server), not that an agent is missing.
            raise WrongServiceError(self.not_agents_bar(f"POST {API_PREFIX}/login/access-token answered "
                                                        f"{response.status} ({response.detail()[:80]})"))
        response.raise_for_status()
        try:
            body = response.json()
        except APIError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise WrongServiceError(self.not_agents_bar(
                f"POST {API_PREFIX}/login/access-token answered {response.status} without an access_token "
                f"({response.content[:80]!r})"))
        self.__token = body["access_token"]

    def not_agents_bar(self, what: str) -> str:
        """The message of a :class:`WrongServiceError`: what was seen, and what to check."""
        return (f"{self.base_url} does not look like an Agents Bar service: {what}; check base_url (the "
                f"service's address without {API_PREFIX}, e.g. {DEFAULT_BASE_URL})")

    def _auth(self, deadline: float | None) -> _AuthLock:
        """The login lock, waited for no longer than ``deadline`` (act() must not wait out another
        thread's login against a stalled server)."""
        return _AuthLock(self._auth_lock, deadline)

    def token(self, timeout: tuple | None = None, deadline: float | None = None) -> str:
        """The access token in use, logging in first when there is none yet."""
        token = self.__token
        if token is not None:
            return token
        with self._auth(deadline):
            if self.__token is None:
                self.login(bounded(timeout, deadline, self.transport.timeouts.connect))
            assert self.__token is not None
            return self.__token

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
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One authenticated request; logs in again once on ``401`` when it can. Returns any status.

        With ``deadline`` (a ``time.monotonic()`` value) the whole call, logins included, ends by
        then: each part gets only the time left, and :class:`ServiceUnavailableError` says when none is.
        ``headers``: extra request headers (a conditional GET's ``If-None-Match``).
        Raises :class:`ClosedError` after :meth:`close`.
        """
        if self.closed:
            raise ClosedError("this Client is closed")
        transport = self.transport
        connect = transport.timeouts.connect
        # Passed on only when given: a transport of the tests that plays answers need not know it.
        extra: dict[str, Any] = {} if headers is None else {"headers": headers}
        if not auth:
            return transport.request(method, path, body=body, params=params,
                                     timeout=bounded(timeout, deadline, connect), **extra)
        token = self.token(timeout, deadline)
        response = transport.request(method, path, body=body, params=params, token=token,
                                     timeout=bounded(timeout, deadline, connect), **extra)
        if response.status == 401 and self.can_login:
            with self._auth(deadline):
                if self.__token == token:  # nobody refreshed it meanwhile
                    logger.info("access token refused; logging in again as %r", self.username)
                    self.login(bounded(timeout, deadline, connect))
                token = self.__token  # type: ignore[assignment]
            response = transport.request(method, path, body=body, params=params, token=token,
                                         timeout=bounded(timeout, deadline, connect))
        return response

    def close(self) -> None:
        """Close pooled connections; later requests raise :class:`ClosedError`. Idempotent."""
        if not self.closed:
            self.closed = True
            self.transport.close()

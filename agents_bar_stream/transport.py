"""The one place that talks HTTP.

``Transport`` wraps one ``requests.Session`` (keep-alive, pooled; safe to share between the
user's thread and the flusher) and turns every ``requests`` failure into our own
:mod:`agents_bar_stream.exceptions`, so nothing above this module ever sees ``requests``.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter

from agents_bar_stream._version import __version__
from agents_bar_stream.config import Timeouts
from agents_bar_stream.exceptions import (
    AgentExistsError,
    AgentNotFoundError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    InvalidRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerBusyError,
    WrongServiceError,
)

__all__ = ["Response", "Transport", "error_for"]

logger = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class Response:
    """Status, headers and body of one answer; ``json()`` decodes with orjson once."""

    __slots__ = ("status", "headers", "content", "method", "path", "_json")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, method: str, path: str) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self.method = method
        self.path = path
        self._json: Any = _UNSET

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        if self._json is _UNSET:
            try:
                self._json = orjson.loads(self.content) if self.content else None
            except orjson.JSONDecodeError as exc:
                raise APIError(self.status, f"the server answered with invalid JSON ({exc})",
                               method=self.method, path=self.path) from None
        return self._json

    def detail(self) -> str:
        try:
            body = self.json()
        except APIError:
            return self.content[:200].decode("utf-8", "replace") or "(empty answer)"
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"]
            return detail if isinstance(detail, str) else orjson.dumps(detail).decode()
        return self.content[:200].decode("utf-8", "replace") or "(empty answer)"

    def raise_for_status(self) -> Response:
        """Return self when 2xx, else raise the matching error of the tree."""
        if not self.ok:
            raise error_for(self)
        return self


class _Unset:
    pass


_UNSET = _Unset()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for(response: Response) -> Exception:
    """The exception that an error answer stands for."""
    status, detail = response.status, response.detail()
    try:
        body = response.json()
    except APIError:
        body = None
    kwargs: dict[str, Any] = {"body": body, "method": response.method, "path": response.path}
    if status == 401 or status == 403:
        return AuthenticationError(f"{status}: {detail}", status=status)
    if status in _RETRYABLE_STATUS:
        return ServerBusyError(status, detail, retry_after=_retry_after(response.headers))
    if status == 404:
        if not (isinstance(body, dict) and "detail" in body):
            # Every answer of an Agents Bar, a 404 included, is JSON with a detail; a bare or HTML
            # 404 comes from some other web server at this address (or a wrong path before /api/v1).
            kind = response.headers.get("Content-Type") or "no content type"
            return WrongServiceError(
                f"{response.method} {response.path} answered 404 without an Agents Bar's JSON error ({kind}: "
                f"{response.content[:60]!r}): the service URL does not look like an Agents Bar service; check base_url")
        return AgentNotFoundError(status, detail, **kwargs)
    if status == 409:
        return AgentExistsError(status, detail, **kwargs)
    if status == 413:
        return PayloadTooLargeError(status, detail, **kwargs)
    if status in (400, 422):
        return InvalidRequestError(status, detail, **kwargs)
    return APIError(status, detail, **kwargs)


class Transport:
    """HTTP to one service: ``{base_url}/api/v1`` + path, JSON bodies as bytes, errors translated."""

    def __init__(self, api_url: str, *, timeouts: Timeouts = Timeouts(), pool_size: int = 4) -> None:
        self.api_url = api_url
        self.timeouts = timeouts
        self._pool_size = pool_size
        self._pid = os.getpid()
        self._session = self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # Our retries live above this layer (act's deadline, the flusher's backoff); urllib3 must not
        # retry on its own, or a deadline could be overrun.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = f"agents-bar-stream/{__version__}"
        # Proxies from the environment would surprise a robot talking to a local server; requests
        # still honours them if the user asks for it with trust_env on their own session.
        session.trust_env = False
        return session

    def reset_after_fork(self) -> None:
        """A forked child must not share pooled sockets with its parent: open a fresh session."""
        self._pid = os.getpid()
        self._session = self._new_session()

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        token: str | None = None,
        timeout: tuple[float, float] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request and return its answer, whatever the status.

        ``headers`` are added to (or replace) the default ones (``If-None-Match``, ``Accept``).
        Raises only :class:`ConnectionFailedError` (nothing reached the server) or
        :class:`RequestTimeoutError` (no answer in time; the request may have been applied).
        """
        if self._pid != os.getpid():
            self.reset_after_fork()
        sent: dict[str, str] = dict(_JSON_HEADERS) if body is not None else {"Accept": "application/json"}
        if headers:
            sent.update(headers)
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        url = self.api_url + path
        try:
            r = self._session.request(
                method, url, data=body if body is not None else form, params=params, headers=sent,
                timeout=timeout or self.timeouts.as_requests(), allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise ConnectionFailedError(f"could not connect to {self.api_url} in time: {exc}") from None
        except requests.exceptions.Timeout as exc:
            raise RequestTimeoutError(f"{method} {path}: no answer in time ({exc})") from None
        except requests.exceptions.ConnectionError as exc:
            raise ConnectionFailedError(f"{method} {path}: {_short(exc)}") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            # Nothing was sent and a retry will not help: the address itself is wrong.
            raise ConfigurationError(f"invalid service URL {url!r}: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise ConnectionFailedError(f"{method} {path}: {_short(exc)}") from None
        return Response(r.status_code, r.headers, r.content, method, path)


def _short(exc: BaseException) -> str:
    """requests' connection errors nest urllib3's; the innermost reason is what a person wants to read."""
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "Remote end closed",
                   "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower() if marker != "timed out" else "timed out"
    return text[:200]

"""What the commands share: exit codes, CommandError, server options and Client building, formatting.

Standard library only at import time; every command module imports this one, so it must stay light.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents_bar_stream.client import Client

__all__ = [
    "CREDENTIALS_EPILOG", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "PROG", "CommandError", "add_server_options",
    "explain", "formatter", "human_age", "human_bytes", "make_client", "one_line", "positive_float", "positive_int",
    "table", "talking_to", "utc_time",
]

PROG = "agents-bar-stream"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

CREDENTIALS_EPILOG = """\
credentials: --token (else $AGENTS_BAR_ACCESS_TOKEN), or --username and --password (else
$AGENTS_BAR_USERNAME and $AGENTS_BAR_PASSWORD). The server URL: --url, else $AGENTS_BAR_URL,
else http://127.0.0.1:8080."""


class CommandError(Exception):
    """A failure to report as one line on stderr with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help pages keep the line breaks of their descriptions (they hold short lists)."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# --- options --------------------------------------------------------------------------------------


def add_server_options(parser: argparse.ArgumentParser, url_help: str | None = None) -> None:
    """``--url``, ``--username``, ``--password`` and ``--token``, read back by :func:`make_client`."""
    group = parser.add_argument_group("server")
    group.add_argument("--url", help=url_help or "base URL of the server (default: $AGENTS_BAR_URL or http://127.0.0.1:8080)")
    group.add_argument("--username", help="account name (default: $AGENTS_BAR_USERNAME)")
    group.add_argument("--password", help="account password (default: $AGENTS_BAR_PASSWORD)")
    group.add_argument("--token",
                       help="access token instead of username and password (default: $AGENTS_BAR_ACCESS_TOKEN)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# --- the server -----------------------------------------------------------------------------------


def make_client(args: argparse.Namespace, url: str | None = None) -> Client:
    """A Client from the server options in ``args``; ``url`` wins over ``--url`` when given."""
    from agents_bar_stream.client import Client

    return Client(base_url=url or args.url, username=args.username, password=args.password, access_token=args.token)


@contextmanager
def talking_to(url: str | None) -> Iterator[None]:
    """Turn the client's errors inside the block into one CommandError line that names the server at ``url``."""
    from agents_bar_stream.exceptions import AgentsBarError

    try:
        yield
    except AgentsBarError as exc:
        raise CommandError(explain(exc, url)) from exc


def explain(exc: BaseException, url: str | None = None) -> str:
    """One line for a user, for each family of the AgentsBarError tree; ``url`` is the server talked to."""
    from agents_bar_stream import exceptions as e

    where = f" at {url}" if url else ""
    if isinstance(exc, e.ConnectionFailedError):
        return f"cannot reach the server{where}: {one_line(str(exc))}"
    if isinstance(exc, e.RequestTimeoutError):
        return f"the server{where} did not answer in time: {one_line(str(exc))}"
    if isinstance(exc, e.ServerBusyError):
        return f"the server{where} is busy or failing ({exc.status}): {one_line(exc.detail)}"
    if isinstance(exc, e.ServiceUnavailableError):
        return f"the server{where} is unavailable: {one_line(str(exc))}"
    if isinstance(exc, e.AuthenticationError):
        return f"authentication failed{where}: {one_line(str(exc))}"
    if isinstance(exc, e.AgentNotFoundError):
        return f"no such agent{where}: {one_line(exc.detail)}"
    if isinstance(exc, e.AgentExistsError):
        return f"the agent already exists: {one_line(exc.detail)}"
    if isinstance(exc, e.InvalidRequestError):
        return f"the server refused the request ({exc.status}): {one_line(exc.detail)}"
    if isinstance(exc, e.APIError):
        return f"the server answered {exc.status}: {one_line(exc.detail)}"
    if isinstance(exc, e.ConfigurationError):
        return one_line(str(exc))
    if isinstance(exc, e.QueueLockedError):
        return one_line(str(exc))
    if isinstance(exc, e.StreamError):
        return f"queue error: {one_line(str(exc))}"
    if isinstance(exc, e.ClosedError):
        return one_line(str(exc))
    return one_line(str(exc)) or type(exc).__name__


# --- formatting -----------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def utc_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; the columns numbered in ``right`` are right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def one_line(text: str) -> str:
    """The first non-blank line of ``text``: a server's detail or a traceback must not break the one-line rule."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


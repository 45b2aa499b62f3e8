"""The top-level parser, the dispatch to a command's handler, and the error boundary.

Each command module (:mod:`~agents_bar_stream.cli.serve`, :mod:`~agents_bar_stream.cli.queues`,
:mod:`~agents_bar_stream.cli.agents`, :mod:`~agents_bar_stream.cli.demo`) registers its subparsers
with ``register(subparsers)`` and sets ``handler`` on each leaf; :func:`main` calls that handler
and turns whatever it raises into one line on stderr and an exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import NoReturn

from agents_bar_stream.cli import agents, demo, queues, serve
from agents_bar_stream.cli.common import EXIT_FAILURE, EXIT_USAGE, PROG, CommandError, explain, formatter, one_line

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
The Agents Bar streaming client's command line: run the local server, look after the on-disk
step queues, manage agents, and watch a demo agent learn.

exit status: 0 success, 1 failure, 2 usage error; a failure is one line on stderr (--debug shows
the traceback). Each command explains itself: agents-bar-stream COMMAND --help."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (and a pointer to --help) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each leaf command's parser carries its ``handler``."""
    parser = _Parser(prog=PROG, description=DESCRIPTION, formatter_class=formatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (serve, queues, agents, demo):
        module.register(subparsers)
    return parser


class _OneLineFormatter(logging.Formatter):
    """Log records as single lines: the message only, never a traceback (that is what --debug is for)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {one_line(record.getMessage())}"


def _configure_logging(debug: bool) -> None:
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    # Without --debug the library's log stays quiet: its warnings and errors (a fallback in act(),
    # a retry, a step moved to the dead letters) are what these commands sum up on their own, in
    # one line. Only a critical record, which no command expects, is shown (one line too).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "standalone", False):
        return args.handler(args)
    _configure_logging(args.debug)
    from agents_bar_stream.exceptions import AgentsBarError

    try:
        return args.handler(args)
    except CommandError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except AgentsBarError as exc:  # from a command that talks to no server (a queue's own errors)
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {explain(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into one line (see --debug)
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {one_line(str(exc))} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_FAILURE

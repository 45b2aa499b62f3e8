"""``serve``: the local Agents Bar server (the 'server' extra)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agents_bar_stream.cli.common import EXIT_USAGE, PROG

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``serve`` to the top-level ``subparsers``; its options come from the server package when installed."""
    serve = subparsers.add_parser("serve", help="run the local Agents Bar server",
                                  description="Run the local Agents Bar server.")
    # standalone: the server sets up its own logging and reports its own errors, outside the
    # command line's one-line error boundary.
    serve.set_defaults(handler=cmd_serve, standalone=True)
    try:
        from agents_bar_stream.server.runner import add_arguments
    except ImportError:  # the server extra is not installed; `serve` says so when run
        return
    add_arguments(serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from agents_bar_stream.server.runner import run_from_args
    except ImportError as exc:
        print(f"{PROG}: the server needs the 'server' extra ({exc}); see README", file=sys.stderr)
        return EXIT_USAGE
    return run_from_args(args)

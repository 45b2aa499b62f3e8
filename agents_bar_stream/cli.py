"""The ``agents-bar-stream`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agents-bar-stream", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the local Agents Bar server", description="Run the local Agents Bar server.")
    try:
        from agents_bar_stream.server.runner import add_arguments
    except ImportError:  # the server extra is not installed; `serve` says so when run
        add_arguments = None
    if add_arguments is not None:
        add_arguments(serve)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            from agents_bar_stream.server.runner import run_from_args
        except ImportError as exc:
            print(f"agents-bar-stream: the server needs the 'server' extra ({exc}); see README", file=sys.stderr)
            return 2
        return run_from_args(args)
    parser.print_help()
    return 2

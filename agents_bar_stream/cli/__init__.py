"""The ``agents-bar-stream`` command line.

Commands: ``serve`` (run the local server), ``queue`` (look after the on-disk queues: status,
replay, dead-letters, salvage, purge), ``agents`` (list, create, delete agents on a server) and
``demo``.

Exit status: 0 success, 1 failure, 2 usage error. A failure is reported as one line on stderr;
``--debug`` shows the traceback and turns on debug logging.

Modules: ``app`` (top-level parser, dispatch, error boundary), ``common`` (exit codes, server
options, Client building, formatting), and one per command group, each with ``register(subparsers)``:
``serve``, ``queues``, ``agents``, ``demo``. Imports flow one way: app -> command modules -> common.

Only the standard library (and this package's light client) is imported here; the server's and
the demo's libraries (fastapi, torch, numpy, gymnasium, matplotlib) are imported by the command
that needs them.
"""

from __future__ import annotations

from agents_bar_stream.cli.app import build_parser, main

__all__ = ["build_parser", "main"]

"""The self-hosted Agents Bar server (``agents-bar-stream serve``).

Its modules, each importing only those listed below it::

    runner.py       the ``serve`` options (import-light) and the uvicorn runner
    app.py          create_app(): the state, the routers, the error handlers
    api/            one APIRouter per area: auth, agents, snapshots, stream (Part 2), policy
                    (Part 3's ONNX export), dashboard (the page at /, static/, its data route);
                    deps (state, current user, current agent), inputs (bodies, forms, queries),
                    binary_steps (a /steps body: JSON, or the binary encoding of Part 3's compact
                    steps, maybe zstd)
    metrics.py      GET /metrics (prometheus-client, a registry per application), the request
                    timing middleware, and who may read it (token | public | off)
    errors.py       HTTPProblem and the one place that turns errors into {"detail": ...} answers
    state.py        ServerState: what the routes share, one per application (app.state.server)
    connections.py  the connection guards uvicorn lacks (deadlines, a cap, quiet accept errors)
    learner.py      ai-traineree agents, their learner threads and their weights (and their
                    generation, policy version, cached export and policy_lag)
    curves.py       the dashboard's bounded histories: learning curve, episode returns
    policy_export.py an agent's greedy policy as an ONNX model, and its version
    security.py     passwords, access tokens, login limits, the data directory's modes
    replicas.py     Placement: which replica learns each agent (PostgreSQL advisory locks), and
                    the weights the other replicas follow (LISTEN/NOTIFY)
    store_pg.py     PostgresStore: the Store in PostgreSQL, shared by replicas (the `postgres` extra)
    store.py        the Store interface; SqliteStore: accounts, agents and the log of accepted steps;
                    encode_steps/decode_steps, the stored form of a batch for both stores
    arrays.py       arrays in steps: wire references, their checks, the log's compact rows
    uploads.py      a snapshot body's check, run in a child process
    limits.py       what one request may cost (imports nothing)
    process.py      LocalServer: the server in a subprocess, for tests and demos
    static/         the dashboard's page, script and style (package data; nothing from a CDN)

The server shares only the wire rules with the client (``agents_bar_stream.protocol``, ``config``
and ``exceptions``), never the client's machinery. Only the modules that serve requests import
fastapi, torch and numpy (``app``, ``api``, ``errors``, ``state``, ``learner``, ``arrays``,
``runner.run_from_args``); ``store`` imports ``arrays`` only when a row holds arrays. Importing
this package, ``process`` or ``runner.add_arguments`` stays light, so that the client never pays
for the server.
"""

from __future__ import annotations

__all__ = ["LocalServer"]


def __getattr__(name: str):
    # Lazy, so that ``import agents_bar_stream.server`` does not even import subprocess machinery.
    if name == "LocalServer":
        from agents_bar_stream.server.process import LocalServer

        return LocalServer
    raise AttributeError(name)

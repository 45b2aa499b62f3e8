"""``agents-bar-stream serve``: arguments (import-light) and the uvicorn runner (imports lazily).

``add_arguments`` runs whenever the command line parser is built, so this module imports only
the standard library (and ``limits``, which imports nothing) at the top; fastapi, uvicorn and torch
are imported by ``run_from_args``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from agents_bar_stream.config import env_credentials
from agents_bar_stream.server.limits import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_STEPS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TOKEN_TTL,
)

__all__ = ["add_arguments", "run_from_args"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # never listen beyond this machine unless asked to
DEFAULT_PORT = 8080
ENV_DATA_DIR = "AGENTS_BAR_DATA_DIR"
ENV_STORE = "AGENTS_BAR_STORE"


def _default_data_dir() -> str:
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "agents-bar-stream", "server")


_NO_PASSWORD_ARGS = (
    "a password on the command line is visible to every user of this machine (ps, /proc/*/cmdline); "
    "give --user NAME with the password in $AGENTS_BAR_PASSWORD, or --user-file FILE"
)


def _user(text: str) -> str:
    if ":" in text:
        # NAME:PASSWORD is refused, not merely discouraged: by the time this runs the password is
        # already in the process list for every user to read (issue 9).
        raise argparse.ArgumentTypeError(_NO_PASSWORD_ARGS)
    if not text:
        raise argparse.ArgumentTypeError("expected a user NAME")
    return text


def read_user_file(path: str) -> list[tuple[str, str]]:
    """``NAME:PASSWORD`` lines of ``path`` (blank lines and ``#`` comments skipped); raises ``ValueError``."""
    users = []
    with open(path, encoding="utf-8") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & 0o077:
            logger.warning("the user file %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
        for number, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, password = line.partition(":")
            if not sep or not name or not password:
                raise ValueError(f"{path}, line {number}: expected NAME:PASSWORD")
            users.append((name, password))
    return users


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``."""
    # The defaults of --max-connections and --save-interval are repeated here: the modules that
    # define them (connections, learner) import uvicorn and torch, which the parser must not.
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--data-dir", default=_default_data_dir(),
                        help=f"where the database, weights and signing key live (${ENV_DATA_DIR})")
    parser.add_argument(
        "--store", default=os.environ.get(ENV_STORE) or None, metavar="URL",
        help="postgresql://user:pass@host/db (any libpq URI; a Unix socket as ?host=/dir): run as one of any number "
        "of replicas sharing that database, no data directory needed; or sqlite:///path/file.sqlite3. Default: "
        f"SQLite in --data-dir (${ENV_STORE})",
    )
    parser.add_argument("--replica-id", default="",
                        help="this process's name among replicas (GET /agents/{name} 'learner'; default: host-pid)")
    parser.add_argument("--port-file", help="write the port here once the server answers (useful with --port 0)")
    parser.add_argument(
        "--user",
        action="append",
        type=_user,
        default=[],
        metavar="NAME",
        help="ensure this account exists, with the password in $AGENTS_BAR_PASSWORD (never on the command line)",
    )
    parser.add_argument(
        "--user-file",
        metavar="FILE",
        help="ensure the accounts of FILE exist with their passwords: NAME:PASSWORD lines (keep it mode 0600)",
    )
    parser.add_argument("--token-ttl", type=_positive(float), default=DEFAULT_TOKEN_TTL,
                        help="access token lifetime in seconds")
    parser.add_argument("--max-batch-steps", type=_positive(int), default=DEFAULT_MAX_BATCH_STEPS,
                        help="most steps per POST /steps")
    parser.add_argument("--max-batch-bytes", type=_positive(int), default=DEFAULT_MAX_BATCH_BYTES,
                        help="largest POST /steps body")
    parser.add_argument("--max-body-bytes", type=_positive(int), default=DEFAULT_MAX_BODY_BYTES,
                        help="largest snapshot body")
    parser.add_argument(
        "--max-connections", type=_positive(int), default=1000,
        help="most open connections (lowered to fit the open-file limit); past it, the connection waiting "
        "longest for its request head is closed (default: %(default)s)",
    )
    parser.add_argument("--save-interval", type=_positive(float), default=30.0, help="seconds between weight saves")
    parser.add_argument(
        "--synchronous",
        choices=["full", "normal"],
        default="full",
        help="SQLite synchronous mode: full survives power loss (default); normal only a process crash",
    )
    parser.add_argument("--no-learn", dest="learn", action="store_false", help="accept steps but run no learners")
    parser.add_argument(
        "--part1-only", dest="streaming", action="store_false",
        help="speak only Part 1 of the protocol, like an old Agents Bar (to test clients against one)",
    )
    parser.add_argument(
        "--json-steps-only", dest="binary_steps", action="store_false",
        help="take POST /steps as JSON only and do not advertise the binary steps, like a server from before "
             "them (to test clients against one)",
    )
    parser.add_argument(
        "--metrics", choices=["token", "public", "off"], default="token",
        help="who may GET /metrics (Prometheus text; it names every account's agents): 'token' (default) a "
        "bearer of --metrics-token-file's token, 'public' anyone who reaches the port, 'off' nobody",
    )
    parser.add_argument("--metrics-token-file", metavar="FILE",
                        help="a file holding the bearer token Prometheus sends for /metrics (keep it mode 0600)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="(default: %(default)s)")


def _users(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Accounts from --user-file, --user NAME (password from the environment) and the environment."""
    users = read_user_file(args.user_file) if args.user_file else []
    env_name, password = env_credentials()
    for name in args.user or []:
        if not password:
            raise ValueError(f"--user {name}: set its password in $AGENTS_BAR_PASSWORD, or use --user-file")
        users.append((name, password))
    if env_name and password:
        users.append((env_name, password))
    return users


def _connection_cap(wanted: int) -> int:
    """``wanted``, lowered so that connections cannot take the file descriptors the server needs.

    The soft open-file limit is raised to the hard one first. What the server itself holds (the
    database, its WAL and shared memory for each of up to ~41 threads, torch, logs) is reserved.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep the limit as it is
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    reserve = in_use + 3 * 42 + 32  # a SQLite connection (3 files) per request thread, plus slack
    cap = min(wanted, soft - reserve)
    if cap < 16:
        logger.warning("only %d file descriptors may be opened (ulimit -n); allowing 16 connections", soft)
        cap = 16
    elif cap < wanted:
        logger.info("at most %d connections: the open-file limit is %d", cap, soft)
    return cap


def _write_port_file(path: str, port: int) -> None:
    # Atomic: a reader polling the file never sees it half written.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or SIGINT; returns the process exit status."""
    level = getattr(logging, str(args.log_level).upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        import uvicorn  # noqa: F401 - checked here, used by _serve

        from agents_bar_stream.server.app import create_app
    except ImportError as exc:
        print(f"agents-bar-stream serve: the server needs the 'server' extra ({exc})", file=sys.stderr)
        return 2

    # Every file the server creates (the database and its WAL, weights, logs) is the owner's alone.
    os.umask(0o077)
    try:
        users = _users(args)
    except (OSError, ValueError) as exc:
        print(f"agents-bar-stream serve: {exc}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).expanduser()
    metrics_token = None
    if args.metrics_token_file:
        try:
            metrics_token = Path(args.metrics_token_file).read_text().strip()
        except OSError as exc:
            print(f"agents-bar-stream serve: --metrics-token-file: {exc}", file=sys.stderr)
            return 2
        if len(metrics_token) < 16:
            print("agents-bar-stream serve: --metrics-token-file: the token must be at least 16 characters",
                  file=sys.stderr)
            return 2
    from agents_bar_stream.server.store import StoreUnavailable, parse_store_url

    try:
        kind = parse_store_url(args.store)[0] if args.store else "sqlite"
    except ValueError as exc:
        print(f"agents-bar-stream serve: --store: {exc}", file=sys.stderr)
        return 2
    shared = kind == "postgresql"
    # What the start line names: never the URL itself, which may carry a password.
    where = "PostgreSQL (shared by replicas)" if shared else str(data_dir)
    try:
        app = _create(create_app, None if shared else data_dir, args, users, metrics_token)
    except ImportError as exc:
        if not shared:
            raise
        print(f"agents-bar-stream serve: a PostgreSQL store needs the 'postgres' extra ({exc})", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"agents-bar-stream serve: {exc}", file=sys.stderr)
        return 1
    # torch and the rest are imported by now: move their millions of objects out of the garbage
    # collector's sight. Otherwise each full collection, which parsing a large /steps body sets
    # off every few requests, walks them all (~100 ms here, a stall for every client).
    gc.freeze()
    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        print(f"agents-bar-stream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return _serve(app, sock, args, level, where)


def _create(create_app, data_dir: Path | None, args: argparse.Namespace, users: list[tuple[str, str]],
            metrics_token: str | None):
    return create_app(
        data_dir,
        store=args.store,
        replica_id=args.replica_id,
        users=users,
        token_ttl=args.token_ttl,
        max_batch_steps=args.max_batch_steps,
        max_batch_bytes=args.max_batch_bytes,
        max_body_bytes=args.max_body_bytes,
        synchronous=args.synchronous.upper(),
        learn=args.learn,
        save_interval=args.save_interval,
        streaming=args.streaming,
        binary_steps=args.binary_steps,
        metrics=args.metrics,
        metrics_token=metrics_token,
    )


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a port the kernel picks), for uvicorn to inherit."""
    # Bind the socket ourselves: with --port 0 the kernel picks the port and we learn which; and
    # SO_REUSEADDR lets a restarted server take the same port while old connections sit in TIME_WAIT.
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says it is TCP; without it every keep-alive response waits ~40 ms for the
    # client's delayed ACK (headers and body are two writes).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(app, sock: socket.socket, args: argparse.Namespace, level: int, where: str) -> int:
    """Run uvicorn with the connection guards on ``sock`` until a signal stops it; the exit status."""
    import uvicorn

    from agents_bar_stream.server.connections import ConnectionLimits, RateLimitedLoopErrors, guarded_protocol

    port = sock.getsockname()[1]
    limits = ConnectionLimits(max_connections=_connection_cap(args.max_connections))

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            # asyncio logs an accept error once per pending connection, in a tight loop, when file
            # descriptors run out (issue 9: 143 MB of log in 25 s): one line per 10 s instead.
            asyncio.get_running_loop().set_exception_handler(RateLimitedLoopErrors(interval=10.0))
            await super().startup(sockets=sockets)
            if self.started and args.port_file:
                _write_port_file(args.port_file, port)
            logger.info("agents-bar-stream serving on http://%s:%s (data: %s)", args.host, port, where)

    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=level <= logging.DEBUG,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Head and body deadlines and the connection cap (connections.py); uvicorn's own settings:
        http=guarded_protocol(limits),
        timeout_keep_alive=limits.keep_alive,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        # uvicorn answers 503 once this many requests are in flight; the cap itself is the protocol's.
        limit_concurrency=limits.max_connections + 1,
        # asyncio's accept loop tries this many accepts per wake-up (and logs each failure).
        backlog=128,
    )
    server = _Server(config)
    # After a graceful shutdown uvicorn raises the signal it caught again, against the handler
    # that was installed before it; a no-op handler here makes SIGTERM end with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown: it stops accepting, finishes the
    # requests in flight, then runs the lifespan exit, which stops the learners and saves weights.
    server.run(sockets=[sock])
    return 0 if server.started else 1

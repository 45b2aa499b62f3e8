"""The ``agents-bar-stream`` command line.

Commands: ``serve`` (run the local server), ``queue`` (look after the on-disk queues: status,
replay, dead-letters, purge), ``agents`` (list, create, delete agents on a server) and ``demo``.

Exit status: 0 success, 1 failure, 2 usage error. A failure is reported as one line on stderr;
``--debug`` shows the traceback and turns on debug logging.

Only the standard library (and this package's light client) is imported here; the server's and
the demo's libraries (fastapi, torch, numpy, gymnasium, matplotlib) are imported by the command
that needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence

PROG = "agents-bar-stream"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_CREDENTIALS_EPILOG = """\
credentials: --token (else $AGENTS_BAR_ACCESS_TOKEN), or --username and --password (else
$AGENTS_BAR_USERNAME and $AGENTS_BAR_PASSWORD). The server URL: --url, else $AGENTS_BAR_URL,
else http://127.0.0.1:8080."""


_DESCRIPTION = """\
The Agents Bar streaming client's command line: run the local server, look after the on-disk
step queues, manage agents, and watch a demo agent learn.

exit status: 0 success, 1 failure, 2 usage error; a failure is one line on stderr (--debug shows
the traceback). Each command explains itself: agents-bar-stream COMMAND --help."""


class CommandError(Exception):
    """A failure to report as one line on stderr with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (and a pointer to --help) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# --- the parser -------------------------------------------------------------------------------------


def _add_server_options(parser: argparse.ArgumentParser, url_help: Optional[str] = None) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--url", help=url_help or "base URL of the server (default: $AGENTS_BAR_URL or http://127.0.0.1:8080)")
    group.add_argument("--username", help="account name (default: $AGENTS_BAR_USERNAME)")
    group.add_argument("--password", help="account password (default: $AGENTS_BAR_PASSWORD)")
    group.add_argument("--token",
                       help="access token instead of username and password (default: $AGENTS_BAR_ACCESS_TOKEN)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _key_value(text: str) -> tuple:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word is a string
    return key, value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=_DESCRIPTION, formatter_class=_formatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the local Agents Bar server",
                           description="Run the local Agents Bar server.")
    try:
        from agents_bar_stream.server.runner import add_arguments
    except ImportError:  # the server extra is not installed; `serve` says so when run
        pass
    else:
        add_arguments(serve)

    _add_queue_parser(sub)
    _add_agents_parser(sub)
    _add_demo_parser(sub)
    return parser


def _add_queue_parser(sub: Any) -> None:
    queue = sub.add_parser(
        "queue", help="inspect and manage the on-disk step queues", formatter_class=_formatter,
        description="Inspect and manage the on-disk queues where step() keeps transitions until the server "
                    "acknowledges them (one directory per agent and service).")
    qsub = queue.add_subparsers(dest="queue_command", metavar="SUBCOMMAND", required=True)

    status = qsub.add_parser(
        "status", help="show what each queue holds", formatter_class=_formatter,
        description="Show each queue: agent, service URL, producer id, pending transitions, bytes on disk, age "
                    "of the oldest pending transition, dead letters, and the process holding its lock (if any).\n"
                    "Without QUEUE_DIR, every queue under the default root ($AGENTS_BAR_STREAM_QUEUE_ROOT, else "
                    "~/.cache/agents-bar-stream/queues).")
    status.add_argument("queue_dirs", nargs="*", metavar="QUEUE_DIR",
                        help="queue directories (default: all under the root)")
    status.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    replay = qsub.add_parser(
        "replay", help="deliver what a queue holds", formatter_class=_formatter,
        description="Open a queue and deliver every transition it holds to the server, in order and exactly "
                    "once, then exit 0. Safe to interrupt (Ctrl-C): what is not delivered stays on disk; run the "
                    "command again to continue.",
        epilog=_CREDENTIALS_EPILOG)
    replay.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    _add_server_options(replay, "base URL of the server (default: the one stored in the queue)")
    replay.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="give up after S seconds, leaving the rest on disk (default: no limit)")

    dead = qsub.add_parser(
        "dead-letters", help="list, export or requeue the steps the server refused", formatter_class=_formatter,
        description="The dead-letter store holds the transitions the server refused for good (for instance "
                    "422: wrong observation size), with its reason. List them (default), export them as JSON "
                    "lines, or requeue them: append them to the queue again, after the transitions already "
                    "queued, and remove them from the store (fix the agent first, or they are refused again).",
        epilog=_CREDENTIALS_EPILOG + "\nCredentials are needed only for --requeue.")
    dead.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    dead.add_argument("--export", metavar="FILE.jsonl", help="write the dead letters as JSON lines ('-': stdout)")
    dead.add_argument("--requeue", action="store_true", help="send them again (after the steps already queued)")
    dead.add_argument("--timeout", type=_positive_float, default=30.0, metavar="S",
                      help="with --requeue, seconds to try delivering before leaving them queued (default: 30)")
    _add_server_options(dead, "with --requeue: base URL of the server (default: the one stored in the queue)")

    salvage = qsub.add_parser(
        "salvage", help="recover a damaged queue and show what it still holds", formatter_class=_formatter,
        description="Open the queue (which sets aside what fails its check and puts back, under the same "
                    "producer and numbers, every step that passes it), then list what was set aside under "
                    "QUEUE_DIR/damaged: damaged segments and databases, the steps each still holds, and whether "
                    "they were put back. Nothing is deleted. --export writes every step still readable there as "
                    "JSON lines, each with its source, its number and whether its checksum held.")
    salvage.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    salvage.add_argument("--export", metavar="FILE.jsonl", help="write the readable steps as JSON lines ('-': stdout)")
    salvage.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")

    purge = qsub.add_parser(
        "purge", help="delete a queue and everything in it", formatter_class=_formatter,
        description="Delete a queue directory: undelivered transitions and dead letters are lost. Refused "
                    "without --yes, and refused while a process has the queue open.")
    purge.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    purge.add_argument("--yes", action="store_true", help="really delete it")


def _add_agents_parser(sub: Any) -> None:
    agents = sub.add_parser("agents", help="list, create and delete agents on a server", formatter_class=_formatter,
                            description="List, create and delete the agents of an account on a server.",
                            epilog=_CREDENTIALS_EPILOG)
    asub = agents.add_subparsers(dest="agents_command", metavar="SUBCOMMAND", required=True)

    lst = asub.add_parser("list", help="list the account's agents", formatter_class=_formatter,
                          description="List the account's agents: name, model, steps received and steps learned.",
                          epilog=_CREDENTIALS_EPILOG)
    lst.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    _add_server_options(lst)

    create = asub.add_parser("create", help="create an agent", formatter_class=_formatter,
                             description="Create an agent. Hyperparameters go with --param (repeatable), e.g. "
                                         "--param lr=0.001 --param batch_size=64.",
                             epilog=_CREDENTIALS_EPILOG)
    create.add_argument("name", help="agent name: letters, digits, '_', '-', '.'")
    create.add_argument("--model", required=True, help="dqn, rainbow, ppo or ddpg")
    create.add_argument("--obs-size", type=_positive_int, required=True, help="length of an observation")
    create.add_argument("--action-size", type=_positive_int, required=True,
                        help="number of actions (discrete models) or length of an action (continuous ones)")
    create.add_argument("--description", help="free text shown with the agent")
    create.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="a hyperparameter (value read as JSON when it parses: 0.001, true, \"text\")")
    _add_server_options(create)

    delete = asub.add_parser("delete", help="delete an agent and everything it learned", formatter_class=_formatter,
                             description="Delete an agent, its step log and its weights. Refused without --yes. "
                                         "Local queues are not touched.",
                             epilog=_CREDENTIALS_EPILOG)
    delete.add_argument("name", help="the agent's name")
    delete.add_argument("--yes", action="store_true", help="really delete it")
    _add_server_options(delete)


def _add_demo_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="watch an agent learn CartPole through the streaming client", formatter_class=_formatter,
        description="A DQN agent learns gymnasium's CartPole-v1: act() for every action, the streaming step() "
                    "for every transition, until the average return of the last 20 episodes reaches 195 or "
                    "--episodes run out. Then it checks that the server received every transition and saves a "
                    "learning curve.\n\nWithout --url it starts a local server in a temporary directory (needs "
                    "the 'server' extra). --flaky puts a fault-injecting proxy between client and server (resets, "
                    "lost answers, stalls, and one 10 s outage) and checks that the loop kept its pace and the "
                    "server got every transition exactly once. Exit 0 when the counts match.",
        epilog=_CREDENTIALS_EPILOG + "\nCredentials are needed only with --url.")
    _add_server_options(demo, "use this server instead of starting a local one")
    demo.add_argument("--episodes", type=_positive_int, default=400, help="most episodes to run (default: %(default)s)")
    demo.add_argument("--flaky", action="store_true", help="run over a flaky link, with a 10 s outage mid-run")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the environment, agent and faults (default: %(default)s)")
    demo.add_argument("--plot", default="demo-learning-curve.png", metavar="PATH",
                      help="where to save the learning curve PNG (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress, only the summary")


# --- helpers --------------------------------------------------------------------------------------


def _client(args: argparse.Namespace, url: Optional[str] = None) -> Any:
    from agents_bar_stream.client import Client

    return Client(base_url=url or args.url, username=args.username, password=args.password, access_token=args.token)


def _queue_dir(text: str) -> Path:
    """The queue directory ``text``, checked to be one (opening a missing one would create it)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise CommandError(f"no queue directory at {path}")
    if not (path / "data").is_dir() and not (path / "queue.json").is_file():
        raise CommandError(f"{path} is not a queue directory (it has no data/ inside)")
    return path


def _summary(path: Path) -> Dict[str, Any]:
    from agents_bar_stream.storage import read_queue_summary

    return read_queue_summary(path)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _human_age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], right: Sequence[int] = ()) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _explain(exc: BaseException, args: argparse.Namespace) -> str:
    """One line for a user, for each family of the AgentsBarError tree."""
    from agents_bar_stream import exceptions as e

    url = getattr(args, "_url_used", None)
    where = f" at {url}" if url else ""
    if isinstance(exc, e.ConnectionFailedError):
        return f"cannot reach the server{where}: {_one_line(str(exc))}"
    if isinstance(exc, e.RequestTimeoutError):
        return f"the server{where} did not answer in time: {_one_line(str(exc))}"
    if isinstance(exc, e.ServerBusyError):
        return f"the server{where} is busy or failing ({exc.status}): {_one_line(exc.detail)}"
    if isinstance(exc, e.ServiceUnavailableError):
        return f"the server{where} is unavailable: {_one_line(str(exc))}"
    if isinstance(exc, e.AuthenticationError):
        return f"authentication failed{where}: {_one_line(str(exc))}"
    if isinstance(exc, e.AgentNotFoundError):
        return f"no such agent{where}: {_one_line(exc.detail)}"
    if isinstance(exc, e.AgentExistsError):
        return f"the agent already exists: {_one_line(exc.detail)}"
    if isinstance(exc, e.InvalidRequestError):
        return f"the server refused the request ({exc.status}): {_one_line(exc.detail)}"
    if isinstance(exc, e.APIError):
        return f"the server answered {exc.status}: {_one_line(exc.detail)}"
    if isinstance(exc, e.ConfigurationError):
        return _one_line(str(exc))
    if isinstance(exc, e.QueueLockedError):
        return _one_line(str(exc))
    if isinstance(exc, e.StreamError):
        return f"queue error: {_one_line(str(exc))}"
    if isinstance(exc, e.ClosedError):
        return _one_line(str(exc))
    return _one_line(str(exc)) or type(exc).__name__


# --- queue ----------------------------------------------------------------------------------------


def cmd_queue_status(args: argparse.Namespace) -> int:
    if args.queue_dirs:
        dirs = [_queue_dir(d) for d in args.queue_dirs]
    else:
        from agents_bar_stream.config import default_queue_root

        root = default_queue_root()
        dirs = sorted(p for p in root.iterdir() if (p / "data").is_dir()) if root.is_dir() else []
        if not dirs and not args.json:
            print(f"no queues under {root}")
            return EXIT_OK
    summaries = [_summary(d) for d in dirs]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return EXIT_OK
    rows = [
        (s["agent"] or "?", s["service_url"] or "?", s["producer_id"], s["pending"], _human_bytes(s["bytes_on_disk"]),
         _human_age(s["oldest_pending_age"]), s["dead_letters"], len(s["damaged"]), s["locked_by_pid"] or "-",
         s["queue_dir"])
        for s in summaries
    ]
    headers = ("AGENT", "SERVICE", "PRODUCER", "PENDING", "SIZE", "OLDEST", "DEAD", "DAMAGED", "LOCKED BY", "QUEUE DIR")
    print(_table(rows, headers, right=(3, 4, 5, 6, 7)))
    if any(s["damaged"] for s in summaries):
        print("\nsome queues were damaged on disk; `agents-bar-stream queue salvage QUEUE_DIR` shows what was set aside")
    return EXIT_OK


def cmd_queue_salvage(args: argparse.Namespace) -> int:
    import orjson

    from agents_bar_stream.salvage import read_damaged_database
    from agents_bar_stream.segment import unchecked_items
    from agents_bar_stream.storage import DiskQueue

    path = _queue_dir(args.queue_dir)
    queue = DiskQueue(path)  # with the lock: opening is what sets damage aside and puts back what checks out
    try:
        queue.verify()  # every segment, not only the ones opening reads
        records = [dict(r) for r in queue.damage]
        pending = queue.committed_pending()
    finally:
        queue.close()
    steps: List[Dict[str, Any]] = []
    for record in records:
        source = record.get("path")
        if not source or not Path(source).exists():
            record["readable_steps"] = 0
            continue
        if record["what"] == "database":
            salvage = read_damaged_database(Path(source))
            put_back = bool(record.get("recovered"))
            for first, (_t, items) in sorted(salvage.segments.items()):
                steps.extend({"source": source, "seq": first + i, "checksum_ok": True, "put_back": put_back,
                              "item": item} for i, item in enumerate(items))
            record["readable_steps"] = salvage.steps
        else:
            # It failed its check: its lines are offered as they are, flagged, for a person to judge.
            lines = unchecked_items(Path(source).read_bytes())
            first = int(record.get("first_seq") or 0)
            steps.extend({"source": source, "seq": first + i, "checksum_ok": False, "put_back": False, "item": line}
                         for i, line in enumerate(lines))
            record["readable_steps"] = len(lines)
    if args.export:
        out = []
        for s in steps:
            try:
                step = orjson.loads(s["item"])
            except orjson.JSONDecodeError:
                continue  # not even JSON: nothing a person could use
            out.append(orjson.dumps({k: v for k, v in s.items() if k != "item"} | {"step": step}) + b"\n")
        if args.export == "-":
            sys.stdout.buffer.write(b"".join(out))
            sys.stdout.flush()
        else:
            Path(args.export).write_bytes(b"".join(out))
            print(f"exported {len(out)} steps to {args.export}", file=sys.stderr)
        return EXIT_OK
    if args.json:
        print(json.dumps({"queue_dir": str(path), "pending": pending, "damaged": records}, indent=2))
        return EXIT_OK
    if not records:
        print(f"{path}: nothing damaged; {pending} steps queued")
        return EXIT_OK
    rows = []
    for r in records:
        when = datetime.fromtimestamp(r.get("time", 0), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        where = f"{r['first_seq']}..{r['end_seq'] - 1}" if r["what"] == "segment" else "-"
        rows.append((when, r["what"], where, r.get("readable_steps", 0), r.get("recovered", 0),
                     _one_line(r.get("reason", "")), r.get("path") or "-"))
    print(_table(rows, ("TIME (UTC)", "WHAT", "SEQS", "READABLE", "PUT BACK", "REASON", "KEPT AT"), right=(3, 4)))
    print(f"{pending} steps queued for delivery; nothing under {path / 'damaged'} is ever deleted by this tool")
    return EXIT_OK


def _checked_client(args: argparse.Namespace, path: Path, summary: Dict[str, Any]) -> Any:
    """A Client for the queue in ``path``, its server checked to answer and to know the agent.

    Fails now, in one line, if the server cannot be reached, refuses us or has no such agent;
    otherwise the flusher would retry quietly until the timeout. This runs before any RemoteAgent
    is built, because building one on a queue that holds steps starts delivering them at once.
    """
    if summary["locked_by_pid"]:
        raise CommandError(f"the queue {path} is in use by another process (pid {summary['locked_by_pid']}); "
                           "stop it first")
    if not summary["agent"]:
        raise CommandError(f"the queue {path} does not record its agent's name")
    url = args.url or summary["service_url"] or None
    args._url_used = url
    client = _client(args, url)
    client.request("GET", f"/agents/{summary['agent']}").raise_for_status()
    return client


def cmd_queue_replay(args: argparse.Namespace) -> int:
    from agents_bar_stream.client import RemoteAgent
    from agents_bar_stream.config import RetryPolicy, StreamOptions
    from agents_bar_stream.progress import Progress, format_duration

    path = _queue_dir(args.queue_dir)
    summary = _summary(path)
    client = _checked_client(args, path, summary)
    # A short maximum backoff: someone is watching, and the server is known to answer.
    agent = RemoteAgent(client, summary["agent"],
                        stream=StreamOptions(queue_dir=str(path), retry_policy=RetryPolicy(initial=0.05, max_delay=5.0)))
    started = time.monotonic()
    deadline = None if args.timeout is None else started + args.timeout
    total = 0
    progress = None
    try:
        agent.open_queue()
        total = agent.pending
        progress = Progress(total=total, label=f"replay {agent.agent_name}", unit="transitions")
        while True:
            pending = agent.pending
            stats = agent.stats
            note = "" if stats.get("online") is not False else f"offline: {_one_line(stats.get('last_error') or '')}"
            progress.update(total - pending, note=note)
            if pending == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            agent.flush(timeout=0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        agent.close(timeout=2.0)
        left = _summary(path)["pending"]
        print(f"{PROG}: interrupted: {total - left} of {total} transitions delivered, {left} stay in {path}; "
              "run the same command again to continue", file=sys.stderr)
        return EXIT_FAILURE
    progress.close()
    stats = agent.stats
    agent.close(timeout=5.0)
    left = _summary(path)["pending"]
    elapsed = time.monotonic() - started
    dead = int(stats.get("dead_lettered", 0))
    delivered = total - left - dead
    dead_note = f"; {dead} refused by the server and moved to the dead letters" if dead else ""
    if left:
        print(f"{PROG}: {delivered} of {total} transitions delivered in {format_duration(elapsed)}, {left} still in "
              f"{path} (last error: {_one_line(stats.get('last_error') or 'none')}; --debug shows the log); "
              f"run again to continue{dead_note}",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"delivered {delivered} transitions of agent {agent.agent_name} to {agent.client.base_url} in "
          f"{format_duration(elapsed)}{dead_note}; the queue is empty")
    return EXIT_OK


def _dead_letter_records(path: Path) -> List[Dict[str, Any]]:
    from agents_bar_stream.storage import DiskQueue

    queue = DiskQueue(path, lock=False)
    try:
        return queue.dead_letter_records()
    finally:
        queue.close()


def cmd_queue_dead_letters(args: argparse.Namespace) -> int:
    path = _queue_dir(args.queue_dir)
    records = _dead_letter_records(path)
    if args.export:
        import orjson

        lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
        if args.export == "-":
            sys.stdout.buffer.write(lines)
            sys.stdout.flush()
        else:
            Path(args.export).write_bytes(lines)
            print(f"exported {len(records)} dead letters to {args.export}", file=sys.stderr)
    if args.requeue:
        return _requeue(args, path, records)
    if not args.export:
        if not records:
            print(f"no dead letters in {path}")
            return EXIT_OK
        rows = []
        for r in records:
            when = datetime.fromtimestamp(r.get("time", 0), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            rows.append((r.get("seq"), r.get("status"), when, _one_line(r.get("detail", ""))))
        print(_table(rows, ("SEQ", "STATUS", "TIME (UTC)", "DETAIL"), right=(0,)))
    return EXIT_OK


def _requeue(args: argparse.Namespace, path: Path, records: List[Dict[str, Any]]) -> int:
    import orjson

    from agents_bar_stream.client import RemoteAgent
    from agents_bar_stream.config import StreamOptions
    from agents_bar_stream.storage import DiskQueue

    if not records:
        print(f"no dead letters to requeue in {path}")
        return EXIT_OK
    summary = _summary(path)
    client = _checked_client(args, path, summary)  # before anything changes
    # Take the dead letters out of the store first, with the queue locked and no flusher running,
    # then queue them again. The other order would race the flusher: a requeued step that the
    # server refuses again becomes a new dead letter, which "remove the dead letters" would delete.
    # A copy on disk covers the moment in between (a crash, a full disk): it is deleted only once
    # the steps are queued again.
    queue = DiskQueue(path)
    try:
        records = queue.dead_letter_records()
        backup = path / f"requeue-{int(time.time())}.jsonl"
        with open(backup, "wb") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())
        queue.remove_dead_letters()
    finally:
        queue.close()
    queued = 0
    # flush_interval: nothing goes out before flush() below, so the flusher does not read the agent's
    # sizes (and step() hold the rest to them) while the dead letters are being queued again: a
    # step the server refuses again must become a dead letter again, not stop the requeue halfway.
    agent = RemoteAgent(client, summary["agent"], stream=StreamOptions(queue_dir=str(path), flush_interval=3600.0))
    try:
        for r in records:
            s = r["step"]
            agent.step(s["obs"], s["action"], s["reward"], s["next_obs"], s["done"])
            queued += 1
        delivered = agent.flush(timeout=args.timeout)
        stats = agent.stats
    except BaseException:
        agent.close(timeout=2.0)
        print(f"{PROG}: requeue stopped after {queued} of {len(records)} dead letters; all {len(records)} are "
              f"kept in {backup} (JSON lines)", file=sys.stderr)
        raise
    agent.close(timeout=2.0)
    backup.unlink()
    again = int(stats.get("dead_lettered", 0))
    if again:
        raise CommandError(f"requeued {len(records)} dead letters of agent {summary['agent']}, but the server "
                           f"refused {again} again; they are dead letters again (fix the agent first)")
    state = "and delivered them" if delivered else "(not all delivered yet: the rest stays queued; run `queue replay`)"
    print(f"requeued {len(records)} dead letters of agent {summary['agent']} {state}; the dead-letter store is empty")
    return EXIT_OK


def cmd_queue_purge(args: argparse.Namespace) -> int:
    path = _queue_dir(args.queue_dir)
    summary = _summary(path)
    if not args.yes:
        raise CommandError(f"refusing to delete {path} ({summary['pending']} undelivered transitions, "
                           f"{summary['dead_letters']} dead letters) without --yes", EXIT_USAGE)
    from agents_bar_stream import lockfile

    try:
        # Hold the queue's own lock while deleting, so that no process opens it half-deleted.
        fd = lockfile.acquire(path)
    except lockfile.LockHeld as held:
        raise CommandError(f"the queue {path} is in use by another process (pid {held.pid or 'unknown'}); "
                           "stop it first") from None
    try:
        shutil.rmtree(path)
    finally:
        lockfile.release(fd)
    print(f"deleted {path}: {summary['pending']} undelivered transitions and {summary['dead_letters']} dead letters "
          f"of agent {summary['agent'] or '?'} discarded")
    return EXIT_OK


# --- agents ---------------------------------------------------------------------------------------


def cmd_agents_list(args: argparse.Namespace) -> int:
    client = _client(args)
    args._url_used = client.base_url
    with client:
        agents = client.request("GET", "/agents/").raise_for_status().json()
    if args.json:
        print(json.dumps(agents, indent=2))
        return EXIT_OK
    if not agents:
        print(f"no agents at {client.base_url}")
        return EXIT_OK
    rows = [(a.get("name"), a.get("model"), a.get("steps_received", 0), a.get("steps_learned", 0)) for a in agents]
    print(_table(rows, ("NAME", "MODEL", "STEPS_RECEIVED", "STEPS_LEARNED"), right=(2, 3)))
    return EXIT_OK


def cmd_agents_create(args: argparse.Namespace) -> int:
    from agents_bar_stream import agents

    client = _client(args)
    args._url_used = client.base_url
    # The create request as is (agents.create, the published module's call): no RemoteAgent, whose
    # queue this command has no use for.
    config = {**dict(args.param), "obs_size": args.obs_size, "action_size": args.action_size}
    payload = {"name": args.name, "model": args.model.lower(), "description": args.description,
               "config": config, "is_active": True}
    with client:
        info = agents.create(client, payload)
    print(f"created agent {info.get('name', args.name)} ({info.get('model', args.model)}, obs_size {args.obs_size}, "
          f"action_size {args.action_size}) at {client.base_url}")
    return EXIT_OK


def cmd_agents_delete(args: argparse.Namespace) -> int:
    from agents_bar_stream.client import RemoteAgent

    if not args.yes:
        raise CommandError(f"refusing to delete agent {args.name} without --yes", EXIT_USAGE)
    client = _client(args)
    args._url_used = client.base_url
    with client:
        deleted = RemoteAgent(client, args.name).remove(agent_name=args.name, quite=False)
    if not deleted:
        raise CommandError(f"no agent named {args.name} at {client.base_url}")
    print(f"deleted agent {args.name} at {client.base_url}")
    return EXIT_OK


# --- demo -----------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from agents_bar_stream.demo import DemoError, run_demo

    args._url_used = args.url
    try:
        result = run_demo(url=args.url, username=args.username, password=args.password, token=args.token,
                          episodes=args.episodes, flaky=args.flaky, seed=args.seed, plot=args.plot, quiet=args.quiet)
    except DemoError as exc:
        raise CommandError(str(exc)) from None
    return EXIT_OK if result.ok else EXIT_FAILURE


_COMMANDS = {
    ("queue", "status"): cmd_queue_status,
    ("queue", "replay"): cmd_queue_replay,
    ("queue", "dead-letters"): cmd_queue_dead_letters,
    ("queue", "purge"): cmd_queue_purge,
    ("queue", "salvage"): cmd_queue_salvage,
    ("agents", "list"): cmd_agents_list,
    ("agents", "create"): cmd_agents_create,
    ("agents", "delete"): cmd_agents_delete,
    ("demo", None): cmd_demo,
}


class _OneLineFormatter(logging.Formatter):
    """Log records as single lines: the message only, never a traceback (that is what --debug is for)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {_one_line(record.getMessage())}"


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
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    sub = getattr(args, f"{args.command}_command", None)
    command = _COMMANDS[(args.command, sub)]
    _configure_logging(args.debug)
    from agents_bar_stream.exceptions import AgentsBarError

    try:
        return command(args)
    except CommandError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except AgentsBarError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_explain(exc, args)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into one line (see --debug)
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {_one_line(str(exc))} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return EXIT_FAILURE

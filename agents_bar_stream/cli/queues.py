"""``queue status|replay|dead-letters|salvage|purge|gc``: look after the on-disk step queues.

Named ``queues`` rather than ``queue`` so that it can never shadow the standard library's module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents_bar_stream.cli.common import (
    CREDENTIALS_EPILOG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandError,
    add_server_options,
    formatter,
    human_age,
    human_bytes,
    make_client,
    one_line,
    positive_float,
    table,
    talking_to,
    utc_time,
)

if TYPE_CHECKING:
    from agents_bar_stream.client import Client

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``queue`` and its subcommands to the top-level ``subparsers``."""
    queue = subparsers.add_parser(
        "queue", help="inspect and manage the on-disk step queues", formatter_class=formatter,
        description="Inspect and manage the on-disk queues where step() keeps transitions until the server "
                    "acknowledges them (one directory per agent and service).")
    qsub = queue.add_subparsers(dest="queue_command", metavar="SUBCOMMAND", required=True)

    status = qsub.add_parser(
        "status", help="show what each queue holds", formatter_class=formatter,
        description="Show each queue: agent, service URL, producer id, pending transitions, bytes on disk, age "
                    "of the oldest pending transition, dead letters, and the process holding its lock (if any).\n"
                    "Without QUEUE_DIR, every queue under the default root ($AGENTS_BAR_STREAM_QUEUE_ROOT, else "
                    "~/.cache/agents-bar-stream/queues).")
    status.add_argument("queue_dirs", nargs="*", metavar="QUEUE_DIR",
                        help="queue directories (default: all under the root)")
    status.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    status.set_defaults(handler=cmd_status)

    replay = qsub.add_parser(
        "replay", help="deliver what a queue holds", formatter_class=formatter,
        description="Open a queue and deliver every transition it holds to the server, in order and exactly "
                    "once, then exit 0. Safe to interrupt (Ctrl-C): what is not delivered stays on disk; run the "
                    "command again to continue.",
        epilog=CREDENTIALS_EPILOG)
    replay.add_argument("queue_dir", metavar="QUEUE_DIR", nargs="?", help="the queue directory")
    replay.add_argument("--all", action="store_true",
                        help="every queue under the root that holds transitions, one after the other (queues in "
                             "use by a process, and those set aside when their agent was deleted, are skipped)")
    add_server_options(replay, "base URL of the server (default: the one stored in the queue)")
    replay.add_argument("--timeout", type=positive_float, metavar="S",
                        help="give up after S seconds, leaving the rest on disk (default: no limit)")
    replay.set_defaults(handler=cmd_replay)

    dead = qsub.add_parser(
        "dead-letters", help="list, export or requeue the steps the server refused", formatter_class=formatter,
        description="The dead-letter store holds the transitions the server refused for good (for instance "
                    "422: wrong observation size), with its reason. List them (default), export them as JSON "
                    "lines, or requeue them: append them to the queue again, after the transitions already "
                    "queued, and remove them from the store (fix the agent first, or they are refused again).",
        epilog=CREDENTIALS_EPILOG + "\nCredentials are needed only for --requeue.")
    dead.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    dead.add_argument("--export", metavar="FILE.jsonl", help="write the dead letters as JSON lines ('-': stdout)")
    dead.add_argument("--requeue", action="store_true", help="send them again (after the steps already queued)")
    dead.add_argument("--timeout", type=positive_float, default=30.0, metavar="S",
                      help="with --requeue, seconds to try delivering before leaving them queued (default: 30)")
    add_server_options(dead, "with --requeue: base URL of the server (default: the one stored in the queue)")
    dead.set_defaults(handler=cmd_dead_letters)

    salvage = qsub.add_parser(
        "salvage", help="recover a damaged queue and show what it still holds", formatter_class=formatter,
        description="Open the queue (which sets aside what fails its check and puts back, under the same "
                    "producer and numbers, every step that passes it), then list what was set aside under "
                    "QUEUE_DIR/damaged: damaged segments and databases, the steps each still holds, and whether "
                    "they were put back. Nothing is deleted. --export writes every step still readable there as "
                    "JSON lines, each with its source, its number and whether its checksum held.")
    salvage.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    salvage.add_argument("--export", metavar="FILE.jsonl", help="write the readable steps as JSON lines ('-': stdout)")
    salvage.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    salvage.set_defaults(handler=cmd_salvage)

    purge = qsub.add_parser(
        "purge", help="delete a queue and everything in it", formatter_class=formatter,
        description="Delete a queue directory: undelivered transitions and dead letters are lost. Refused "
                    "without --yes, and refused while a process has the queue open.")
    purge.add_argument("queue_dir", metavar="QUEUE_DIR", help="the queue directory")
    purge.add_argument("--yes", action="store_true", help="really delete it")
    purge.set_defaults(handler=cmd_purge)

    gc = qsub.add_parser(
        "gc", help="delete empty or orphaned queues not touched for a while", formatter_class=formatter,
        description="Find the queues under the root that nothing was written to for --older-than and that are "
                    "empty (nothing pending, no dead letters) or orphaned (set aside when their agent was "
                    "deleted: their steps can never be delivered; or a directory under the root that holds no "
                    "queue). A dry run by default: it lists them and deletes nothing; --delete deletes them. A "
                    "queue in use by a process is never touched.")
    gc.add_argument("--older-than", required=True, type=_duration, metavar="AGE",
                    help="untouched for at least this long: seconds, or with a unit (30m, 12h, 7d)")
    mode = gc.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="delete", action="store_false", help="only list them (the default)")
    mode.add_argument("--delete", dest="delete", action="store_true", help="delete them")
    gc.add_argument("--root", metavar="DIR",
                    help="the queue root (default: $AGENTS_BAR_STREAM_QUEUE_ROOT, else "
                         "~/.cache/agents-bar-stream/queues)")
    gc.set_defaults(handler=cmd_gc, delete=False)


# --- helpers --------------------------------------------------------------------------------------


def _duration(text: str) -> float:
    from agents_bar_stream.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def _queue_root(args: argparse.Namespace) -> Path:
    from agents_bar_stream.config import default_queue_root

    root = getattr(args, "root", None)
    return Path(root).expanduser() if root else default_queue_root()


def _set_aside(path: Path) -> bool:
    """Whether ``path`` is a queue set aside by RemoteAgent.remove() (its agent was deleted)."""
    return ".removed-" in path.name


def queue_dir(text: str) -> Path:
    """The queue directory ``text``, checked to be one (opening a missing one would create it)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise CommandError(f"no queue directory at {path}")
    if not (path / "data").is_dir() and not (path / "queue.json").is_file():
        raise CommandError(f"{path} is not a queue directory (it has no data/ inside)")
    return path


def read_summary(path: Path) -> dict[str, Any]:
    from agents_bar_stream.storage import read_queue_summary

    return read_queue_summary(path)


def server_url(args: argparse.Namespace, summary: dict[str, Any]) -> str | None:
    """The server a queue's steps go to: ``--url``, else the one stored in the queue."""
    return args.url or summary["service_url"] or None


def checked_client(args: argparse.Namespace, path: Path, summary: dict[str, Any], url: str | None) -> Client:
    """A Client for the queue in ``path``, its server at ``url`` checked to answer and to know the agent.

    Fails now, in one line, if the server cannot be reached, refuses us or has no such agent;
    otherwise the flusher would retry quietly until the timeout. This runs before any RemoteAgent
    is built, because building one on a queue that holds steps starts delivering them at once.
    """
    if summary["locked_by_pid"]:
        raise CommandError(f"the queue {path} is in use by another process (pid {summary['locked_by_pid']}); "
                           "stop it first")
    if not summary["agent"]:
        raise CommandError(f"the queue {path} does not record its agent's name")
    client = make_client(args, url)
    client.request("GET", f"/agents/{summary['agent']}").raise_for_status()
    return client


def write_jsonl(lines: bytes, target: str) -> None:
    """``lines`` to the file ``target``, or to stdout when it is ``-``."""
    if target == "-":
        sys.stdout.buffer.write(lines)
        sys.stdout.flush()
    else:
        Path(target).write_bytes(lines)


# --- status ---------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    if args.queue_dirs:
        dirs = [queue_dir(d) for d in args.queue_dirs]
    else:
        from agents_bar_stream.config import default_queue_root

        root = default_queue_root()
        dirs = sorted(p for p in root.iterdir() if (p / "data").is_dir()) if root.is_dir() else []
        if not dirs and not args.json:
            print(f"no queues under {root}")
            return EXIT_OK
    summaries = [read_summary(d) for d in dirs]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return EXIT_OK
    rows = [
        (s["agent"] or "?", s["service_url"] or "?", s["producer_id"], s["pending"], human_bytes(s["bytes_on_disk"]),
         human_age(s["oldest_pending_age"]), s["dead_letters"], len(s["damaged"]), s["locked_by_pid"] or "-",
         s["queue_dir"])
        for s in summaries
    ]
    headers = ("AGENT", "SERVICE", "PRODUCER", "PENDING", "SIZE", "OLDEST", "DEAD", "DAMAGED", "LOCKED BY", "QUEUE DIR")
    print(table(rows, headers, right=(3, 4, 5, 6, 7)))
    if any(s["damaged"] for s in summaries):
        print(f"\nsome queues were damaged on disk; `{PROG} queue salvage QUEUE_DIR` shows what was set aside")
    return EXIT_OK


# --- salvage --------------------------------------------------------------------------------------


def cmd_salvage(args: argparse.Namespace) -> int:
    from agents_bar_stream.storage import DiskQueue

    path = queue_dir(args.queue_dir)
    queue = DiskQueue(path)  # with the lock: opening is what sets damage aside and puts back what checks out
    try:
        queue.verify()  # every segment, not only the ones opening reads
        records = [dict(r) for r in queue.damage]
        pending = queue.committed_pending()
    finally:
        queue.close()
    steps = _salvaged_steps(records)
    if args.export:
        _export_salvaged(steps, args.export)
        return EXIT_OK
    if args.json:
        print(json.dumps({"queue_dir": str(path), "pending": pending, "damaged": records}, indent=2))
        return EXIT_OK
    if not records:
        print(f"{path}: nothing damaged; {pending} steps queued")
        return EXIT_OK
    rows = []
    for r in records:
        where = f"{r['first_seq']}..{r['end_seq'] - 1}" if r["what"] == "segment" else "-"
        rows.append((utc_time(r.get("time", 0)), r["what"], where, r.get("readable_steps", 0), r.get("recovered", 0),
                     one_line(r.get("reason", "")), r.get("path") or "-"))
    print(table(rows, ("TIME (UTC)", "WHAT", "SEQS", "READABLE", "PUT BACK", "REASON", "KEPT AT"), right=(3, 4)))
    print(f"{pending} steps queued for delivery; nothing under {path / 'damaged'} is ever deleted by this tool")
    return EXIT_OK


def _salvaged_steps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step still readable in what ``records`` set aside; counts each record's ``readable_steps``."""
    from agents_bar_stream.salvage import read_damaged_database
    from agents_bar_stream.segment import unchecked_items

    steps: list[dict[str, Any]] = []
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
    return steps


def _export_salvaged(steps: list[dict[str, Any]], target: str) -> None:
    import orjson

    from agents_bar_stream.wire import item_to_json

    out = []
    for s in steps:
        try:
            step = orjson.loads(item_to_json(s["item"]))  # an array step is exported flattened (issue 12)
        except ValueError:  # orjson's JSONDecodeError, or an array step whose bytes do not fit its header
            continue  # not even JSON: nothing a person could use
        out.append(orjson.dumps({k: v for k, v in s.items() if k != "item"} | {"step": step}) + b"\n")
    write_jsonl(b"".join(out), target)
    if target != "-":
        print(f"exported {len(out)} steps to {target}", file=sys.stderr)


# --- replay ---------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    if args.all == bool(args.queue_dir):
        raise CommandError(f"give QUEUE_DIR or --all (one of them is required, not both; see `{PROG} queue replay "
                           "--help`)", EXIT_USAGE)
    if not args.all:
        return _replay_one(args, queue_dir(args.queue_dir))
    root = _queue_root(args)
    dirs = sorted(p for p in root.iterdir() if (p / "data").is_dir()) if root.is_dir() else []
    todo, failed = [], 0
    for path in dirs:
        if _set_aside(path):
            continue  # its agent was deleted: never sent to a new agent of that name
        summary = read_summary(path)
        if summary["pending"] == 0:
            continue
        if summary["locked_by_pid"]:
            print(f"skipping {path}: in use by process {summary['locked_by_pid']}, which delivers it")
            continue
        todo.append(path)
    if not todo:
        print(f"no queue under {root} holds transitions to replay")
        return EXIT_OK
    for path in todo:
        try:
            code = _replay_one(args, path)
        except CommandError as exc:
            print(f"{PROG}: {path}: {exc}", file=sys.stderr)
            code = EXIT_FAILURE
        failed += code != EXIT_OK
    print(f"replayed {len(todo) - failed} of {len(todo)} queues" + (f"; {failed} failed (see above)" if failed else ""))
    return EXIT_FAILURE if failed else EXIT_OK


def _replay_one(args: argparse.Namespace, path: Path) -> int:
    from agents_bar_stream.client import RemoteAgent
    from agents_bar_stream.config import RetryPolicy, StreamOptions
    from agents_bar_stream.progress import format_duration, progress

    summary = read_summary(path)
    url = server_url(args, summary)
    with talking_to(url):
        client = checked_client(args, path, summary, url)
        # A short maximum backoff: someone is watching, and the server is known to answer.
        agent = RemoteAgent(client, summary["agent"], stream=StreamOptions(
            queue_dir=str(path), retry_policy=RetryPolicy(initial=0.05, max_delay=5.0)))
        started = time.monotonic()
        deadline = None if args.timeout is None else started + args.timeout
        total = 0
        display = None
        try:
            agent.open_queue()
            total = agent.pending
            display = progress(total=total, label=f"replay {agent.agent_name}", unit="transitions")
            while True:
                pending = agent.pending
                stats = agent.stats
                note = "" if stats.get("online") is not False else f"offline: {one_line(stats.get('last_error') or '')}"
                display.update(total - pending, note=note)
                if pending == 0:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                agent.flush(timeout=0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
        except KeyboardInterrupt:
            if display is not None:
                display.close()
            agent.close(timeout=2.0)
            left = read_summary(path)["pending"]
            print(f"{PROG}: interrupted: {total - left} of {total} transitions delivered, {left} stay in {path}; "
                  "run the same command again to continue", file=sys.stderr)
            return EXIT_FAILURE
        display.close()
        stats = agent.stats
        agent.close(timeout=5.0)
    left = read_summary(path)["pending"]
    elapsed = time.monotonic() - started
    dead = int(stats.get("dead_lettered", 0))
    delivered = total - left - dead
    dead_note = f"; {dead} refused by the server and moved to the dead letters" if dead else ""
    if left:
        print(f"{PROG}: {delivered} of {total} transitions delivered in {format_duration(elapsed)}, {left} still in "
              f"{path} (last error: {one_line(stats.get('last_error') or 'none')}; --debug shows the log); "
              f"run again to continue{dead_note}",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"delivered {delivered} transitions of agent {agent.agent_name} to {agent.client.base_url} in "
          f"{format_duration(elapsed)}{dead_note}; the queue is empty")
    return EXIT_OK


# --- dead letters ---------------------------------------------------------------------------------


def _dead_letter_records(path: Path) -> list[dict[str, Any]]:
    from agents_bar_stream.storage import DiskQueue

    queue = DiskQueue(path, lock=False)
    try:
        return queue.dead_letter_records()
    finally:
        queue.close()


def cmd_dead_letters(args: argparse.Namespace) -> int:
    path = queue_dir(args.queue_dir)
    records = _dead_letter_records(path)
    if args.export:
        import orjson

        write_jsonl(b"".join(orjson.dumps(r) + b"\n" for r in records), args.export)
        if args.export != "-":
            print(f"exported {len(records)} dead letters to {args.export}", file=sys.stderr)
    if args.requeue:
        return _requeue(args, path, records)
    if not args.export:
        if not records:
            print(f"no dead letters in {path}")
            return EXIT_OK
        rows = [(r.get("seq"), r.get("status"), utc_time(r.get("time", 0)), one_line(r.get("detail", "")))
                for r in records]
        print(table(rows, ("SEQ", "STATUS", "TIME (UTC)", "DETAIL"), right=(0,)))
    return EXIT_OK


def _requeue(args: argparse.Namespace, path: Path, records: list[dict[str, Any]]) -> int:
    from agents_bar_stream.client import RemoteAgent
    from agents_bar_stream.config import StreamOptions

    if not records:
        print(f"no dead letters to requeue in {path}")
        return EXIT_OK
    summary = read_summary(path)
    url = server_url(args, summary)
    with talking_to(url):
        client = checked_client(args, path, summary, url)  # before anything changes
        records, backup = _take_dead_letters(path)
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
    if again and not delivered:
        # Not all answered within --timeout (a busy server, a retry's backoff): the count is partial.
        raise CommandError(f"requeued {len(records)} dead letters of agent {summary['agent']}; within "
                           f"{args.timeout:g} s the server refused {again} again (dead letters again) and "
                           f"{stats.get('pending', '?')} are still queued (run `queue replay`)")
    if again:
        raise CommandError(f"requeued {len(records)} dead letters of agent {summary['agent']}, but the server "
                           f"refused {again} again; they are dead letters again (fix the agent first)")
    state = "and delivered them" if delivered else "(not all delivered yet: the rest stays queued; run `queue replay`)"
    print(f"requeued {len(records)} dead letters of agent {summary['agent']} {state}; the dead-letter store is empty")
    return EXIT_OK


def _take_dead_letters(path: Path) -> tuple[list[dict[str, Any]], Path]:
    """Move the dead letters out of the store into a backup file; returns them and the backup's path.

    Done with the queue locked and no flusher running, before they are queued again. The other
    order would race the flusher: a requeued step that the server refuses again becomes a new dead
    letter, which "remove the dead letters" would delete. The backup covers the moment in between
    (a crash, a full disk); the caller deletes it once the steps are queued again.
    """
    import orjson

    from agents_bar_stream.storage import DiskQueue

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
    return records, backup


# --- purge ----------------------------------------------------------------------------------------


def cmd_purge(args: argparse.Namespace) -> int:
    path = queue_dir(args.queue_dir)
    summary = read_summary(path)
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


# --- gc -------------------------------------------------------------------------------------------


def _last_write(path: Path) -> float:
    """The newest modification time of anything in ``path`` (the directory itself included)."""
    newest = path.stat().st_mtime
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                newest = max(newest, os.path.getmtime(os.path.join(root, name)))
            except OSError:
                pass
    return newest


def _gc_reason(path: Path, *, locked_by_us: bool = False) -> str | None:
    """Why ``path`` may be collected ("empty", "orphaned: ..."), or None to keep it."""
    from agents_bar_stream import lockfile

    if not locked_by_us and lockfile.holder(path) is not None:
        return None  # in use
    if not (path / "data").is_dir():
        return "orphaned: no queue in it"
    # Opening the database to read it updates its modification time: put the times back, or a
    # dry run would make every queue it looked at seem fresh to the next one.
    times = {}
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            times[full] = (st.st_atime, st.st_mtime)
    try:
        summary = read_summary(path)
    except Exception:  # noqa: BLE001 - a damaged queue is for `queue salvage`, never collected
        return None
    finally:
        for full, stamp in times.items():
            try:
                os.utime(full, stamp)
            except OSError:
                pass
    if summary["damaged"]:
        return None
    if _set_aside(path):
        return f"orphaned: its agent was deleted ({summary['pending']} undelivered, {summary['dead_letters']} dead)"
    if summary["pending"] == 0 and summary["dead_letters"] == 0:
        return "empty"
    return None


def cmd_gc(args: argparse.Namespace) -> int:
    from agents_bar_stream import lockfile

    root = _queue_root(args)
    if not root.is_dir():
        print(f"no queues under {root}")
        return EXIT_OK
    now = time.time()
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        age = now - _last_write(path)
        if age < args.older_than:
            continue
        reason = _gc_reason(path)
        if reason is not None:
            found.append((path, reason, age, sum(f.stat().st_size for f in path.rglob("*") if f.is_file())))
    if not found:
        print(f"no empty or orphaned queue under {root} is older than {human_age(args.older_than)}")
        return EXIT_OK
    rows = [(str(p), reason, human_age(age), human_bytes(size)) for p, reason, age, size in found]
    print(table(rows, ("QUEUE DIR", "WHY", "UNTOUCHED FOR", "SIZE"), right=(2, 3)))
    total = human_bytes(sum(size for *_, size in found))
    if not args.delete:
        print(f"dry run: nothing deleted; `{PROG} queue gc --older-than {args.older_than:g} --delete` "
              f"deletes these {len(found)} ({total})")
        return EXIT_OK
    deleted = 0
    for path, _reason, _age, _size in found:
        try:
            # Under the queue's own lock, checked again: a process may have opened it since.
            fd = lockfile.acquire(path) if (path / "lock").exists() else None
        except (lockfile.LockHeld, OSError):
            print(f"kept {path}: it is in use now")
            continue
        try:
            if _gc_reason(path, locked_by_us=True) is None:
                print(f"kept {path}: it changed meanwhile")
                continue
            shutil.rmtree(path)
            deleted += 1
        finally:
            lockfile.release(fd)
    print(f"deleted {deleted} of {len(found)} queues ({total})")
    return EXIT_OK

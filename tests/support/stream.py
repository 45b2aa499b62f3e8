"""Helpers of the streaming tests: observations that carry their index, and reading them back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

from support.api import Api, login


def obs_of(i: int, run: int = 0) -> list:
    """An observation that carries its step's index (and a run id) so the server's log can be checked."""
    return [float(i), float(run), 0.5, -0.5]


def indices(log: list, run: int | None = None) -> list:
    """The step indices, in the server's order, of a log from ``Api.log``."""
    return [int(e["step"]["obs"][0]) for e in log if run is None or int(e["step"]["obs"][1]) == run]


def api_for(server, user) -> Api:
    """A logged-in ``Api`` on ``server`` (anything with ``.url``)."""
    return Api(server.url, login(server.url, *user))


# A program that steps into a queue in durability="step" until its disk is full. The fault
# injected: RLIMIT_FSIZE stops the queue's files from growing past a size, as a full filesystem
# would (and, unlike a tmpfs mount, needs no privileges). `{loop}` steps `agent` and counts what
# was accepted in `accepted`; the program prints "full after <accepted> <errno>".
_FILL_DISK = r"""
import resource, signal, sys
from agents_bar_stream import Client, RemoteAgent, StorageError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
agent = RemoteAgent(Client(base_url="http://127.0.0.1:9", access_token="t"), "disk-full", queue_dir=sys.argv[1],
                    durability="step")
agent.step([0.0] * {width}, 0, 0.0, [0.0] * {width}, False)   # the queue exists before the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
accepted = 1
try:
{loop}
except StorageError as exc:
    print("full after", accepted, exc.errno)
{after_full}
    sys.exit(0)
sys.exit(5)
"""


def fill_disk(queue_dir, limit: int, *, width: int, loop: str, after_full: str = "") -> tuple[int, str]:
    """Run ``loop`` in a child process until the queue's disk is full; returns (steps accepted, output)."""
    code = _FILL_DISK.format(width=width, loop=textwrap.indent(loop.strip("\n"), "    "),
                             after_full=textwrap.indent(after_full.strip("\n"), "    "))
    proc = subprocess.run([sys.executable, "-c", code, str(queue_dir), str(limit)], capture_output=True, timeout=100)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode()
    return int(out.split()[2]), out


def queued_firsts(queue_dir) -> list:
    """The first observation number of every step committed in the queue, in order."""
    from agents_bar_stream.storage import DiskQueue

    q = DiskQueue(queue_dir)
    try:
        pending = q.committed_pending()
        batch = q.read_batch(pending, 2**31) if pending else None
        return [] if batch is None else [orjson.loads(item)["obs"][0] for item in batch.items]
    finally:
        q.close()

"""Local limits: a full queue under each policy, a full disk, and step() never waiting on the network."""

from __future__ import annotations

import errno
import logging
import resource
import subprocess
import sys
import threading
import time

import pytest
from support.api import wait_for
from support.stream import api_for, fill_disk, indices, obs_of, queued_firsts

from agents_bar_stream import InvalidStepError, QueueFullError, StorageError


@pytest.mark.timeout(120)
def test_step_never_waits_for_the_network(dead_server, agent_name, make_agent):
    agent = make_agent(dead_server, agent_name, create=False)
    n = 100_000
    worst = 0.0
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
        worst = max(worst, time.perf_counter() - t0)
    total = time.perf_counter() - started
    # A step that touched the network would wait at least a connect attempt to a dead port plus
    # backoff; the bound here is far above memory speed and far below any network wait.
    assert worst < 1.0, f"one step() took {worst:.3f} s"
    assert agent.pending == n
    # The flusher noticed the outage on its own thread, whenever it got the CPU: soon, not
    # necessarily before this loop ended.
    wait_for(lambda: agent.stats["online"] is False, timeout=30, message="the agent to report itself offline")
    print(f"100k steps with the server down: {total:.2f} s, worst {worst * 1e3:.1f} ms")


@pytest.mark.timeout(120)
def test_pending_is_exact_while_the_group_commit_runs(dead_server, agent_name, make_agent):
    # A reader of `pending` from another thread (a progress display, or flush() deciding that all
    # is delivered) must see every queued step exactly once while steps move from memory to disk:
    # CI once read 104096 of 100000 (a segment counted twice), and a later fix read 0 of 10
    # (a segment counted nowhere). Nothing is delivered here, so pending equals what was queued.
    agent = make_agent(dead_server, agent_name, create=False, commit_interval=0.001)
    n = 60_000
    wrong = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            before = agent.stats["enqueued"]
            pending = agent.pending
            after = agent.stats["enqueued"]
            if not before <= pending <= after:
                wrong.append((before, pending, after))

    agent.step(obs_of(0), 0, 0.0, obs_of(1), False)  # the queue and its threads exist from here
    watcher = threading.Thread(target=watch, daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # many more thread switches, so the watcher lands inside the window
    watcher.start()
    try:
        for i in range(1, n):
            agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    finally:
        stop.set()
        watcher.join(10)
        sys.setswitchinterval(switch)
    assert not wrong, f"pending outside [queued before, queued after] {len(wrong)} times, e.g. {wrong[:3]}"
    assert agent.pending == n


@pytest.mark.timeout(60)
def test_stats_hold_every_key_before_the_first_step(dead_server, agent_name, make_agent):
    agent = make_agent(dead_server, agent_name, create=False)
    before = agent.stats
    assert before["enqueued"] == 0 and before["pending"] == 0 and before["dropped"] == 0
    agent.step(obs_of(0), 0, 0.0, obs_of(1), False)
    after = agent.stats
    assert set(before) == set(after)
    assert after["enqueued"] == 1 and after["pending"] == 1


@pytest.mark.timeout(60)
def test_on_full_raise(dead_server, agent_name, make_agent):
    agent = make_agent(dead_server, agent_name, create=False, max_pending_bytes=20_000, on_full="raise")
    accepted = 0
    with pytest.raises(QueueFullError):
        for i in range(10_000):
            agent.step(obs_of(i), 0, 0.0, obs_of(i + 1), False)
            accepted += 1
    assert 0 < accepted < 10_000
    assert agent.pending == accepted  # the refused step was not queued, nothing earlier was lost


@pytest.mark.timeout(60)
def test_on_full_block_times_out_then_resumes_when_the_server_returns(down_server, user, agent_name, make_agent):
    agent = make_agent(down_server, agent_name, create=False, max_pending_bytes=20_000, on_full="block",
                       block_timeout=0.5)
    accepted = 0
    started = time.monotonic()
    with pytest.raises(QueueFullError):
        for i in range(10_000):
            agent.step(obs_of(i), 0, 0.0, obs_of(i + 1), False)
            accepted += 1
    assert time.monotonic() - started >= 0.5  # it did wait for room before giving up
    down_server.start(timeout=60)
    # With the server back the flusher makes room. Wait for it first: the flusher may be inside a
    # backoff of up to max_delay (0.5 s here) when the server returns, as long as block_timeout, and a
    # step() that raced it would time out by design, not by a fault.
    assert agent.flush(timeout=30)
    for i in range(accepted, accepted + 2000):
        agent.step(obs_of(i), 0, 0.0, obs_of(i + 1), False)
    assert agent.flush(timeout=30)
    assert indices(api_for(down_server, user).log(agent_name)) == list(range(accepted + 2000))


@pytest.mark.timeout(60)
def test_on_full_drop_oldest_keeps_the_newest_in_order(down_server, user, agent_name, make_agent):
    agent = make_agent(down_server, agent_name, create=False, max_pending_bytes=50_000, on_full="drop_oldest",
                       durability="step")
    n = 3000
    for i in range(n):
        agent.step(obs_of(i), 0, 0.0, obs_of(i + 1), False)
    dropped = agent.stats["dropped"]
    assert dropped > 0
    down_server.start(timeout=60)
    assert agent.flush(timeout=30), agent.stats
    got = indices(api_for(down_server, user).log(agent_name))
    assert len(got) == n - dropped
    assert got == sorted(got) and got[-1] == n - 1  # in order, the newest kept
    assert got == list(range(got[0], n)) or len(set(got)) == len(got)  # no duplicates


@pytest.mark.timeout(60)
def test_flush_with_the_server_down_returns_false_in_time(dead_server, agent_name, make_agent, caplog):
    caplog.set_level(logging.WARNING, logger="agents_bar_stream")
    agent = make_agent(dead_server, agent_name, create=False)
    agent.step(obs_of(0), 0, 0.0, obs_of(1), False)
    started = time.monotonic()
    assert agent.flush(timeout=0.5) is False
    assert time.monotonic() - started < 5
    started = time.monotonic()
    agent.close(timeout=0.5)
    assert time.monotonic() - started < 10
    # Closing while the server is away is an ordinary event: a warning that steps stay on disk,
    # never an error with a traceback.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert any("stay in" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(30)
def test_bad_transitions_raise_and_queue_nothing(server, agent_name, make_agent):
    agent = make_agent(server, agent_name)
    agent.sync()  # the agent now knows obs_size 4 and 2 discrete actions
    agent.step(obs_of(0), 1, 0.0, obs_of(1), False)
    bad = [
        ([0.0] * 3, 0, 0.0, [0.0] * 4, False),          # obs too short
        (obs_of(0), 0, float("nan"), obs_of(1), False),  # non-finite reward
        (obs_of(0), 2, 0.0, obs_of(1), False),           # action out of range
        (obs_of(0), 0.5, 0.0, obs_of(1), False),         # not an integer action
        (obs_of(0), 0, 0.0, ["a", 0.0, 0.0, 0.0], False),  # not numbers
        (obs_of(0), 0, 0.0, obs_of(1), "yes"),           # done not a bool
    ]
    for args in bad:
        with pytest.raises(InvalidStepError):
            agent.step(*args)
        with pytest.raises(ValueError):  # InvalidStepError is a ValueError too
            agent.step(*args)
    assert agent.stats["enqueued"] == 1
    assert agent.flush(timeout=30) and agent.pending == 0


@pytest.mark.timeout(120)
def test_a_full_disk_raises_storage_error_and_keeps_what_was_queued(tmp_path):
    queue_dir = tmp_path / "full-queue"
    accepted, out = fill_disk(queue_dir, 2 * 2**20, width=64, loop="""
for i in range(1, 200000):
    agent.step([float(i)] * 64, 0, 0.0, [0.0] * 64, False)
    accepted += 1
""", after_full="""
try:
    agent.step([0.0] * 64, 0, 0.0, [0.0] * 64, False)
    print("accepted after full")
except StorageError:
    print("still refused")
""")
    assert "still refused" in out
    # Reopened without the limit: every step that step() accepted is there, intact and in order.
    assert queued_firsts(queue_dir) == [float(i) for i in range(accepted)]
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # (the limit applied to the child only)



def _tmpfs(mount, size: str):
    """Mount a tmpfs of ``size`` (the fault injected: a filesystem that fills up) at ``mount``."""
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, timeout=30
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {made.stderr.decode().strip()}")
    return mount


@pytest.fixture
def small_filesystem(tmp_path):
    """A 4 MiB tmpfs, unmounted after the test."""
    yield _tmpfs(tmp_path / "small", "4m")
    subprocess.run(["umount", "-l", str(tmp_path / "small")], capture_output=True, timeout=30)


@pytest.fixture
def filesystem_24m(tmp_path):
    """A 24 MiB tmpfs, unmounted after the test."""
    yield _tmpfs(tmp_path / "fs24", "24m")
    subprocess.run(["umount", "-l", str(tmp_path / "fs24")], capture_output=True, timeout=30)


@pytest.mark.timeout(120)
def test_batch_mode_takes_steps_again_once_the_disk_has_room_with_the_server_away(dead_server, agent_name,
                                                                                    make_agent, filesystem_24m):
    # Someone else's file filled the disk, and is then deleted; the server stays away, so no
    # delivery frees anything. The steps held in memory go to disk at full speed and step() takes
    # new ones again. Before the fix the group commit, still careful after the full disk, wrote one
    # 64 KiB segment every 10 s and step() refused new steps for minutes.
    ballast = filesystem_24m / "ballast"
    ballast.write_bytes(b"\0" * (12 * 2**20))
    # Steps of ~4.5 KB, committed once a second at ~9 MB/s: the commit that finds the disk full
    # keeps several MB in memory (many careful segments), always less than the 12 MiB given back.
    agent = make_agent(dead_server, agent_name, create=False, queue_dir=filesystem_24m / "q", commit_interval=1.0)
    pad = [0.5] * 255
    accepted = 0
    deadline = time.monotonic() + 60
    with pytest.raises(StorageError):
        while time.monotonic() < deadline:
            agent.step([float(accepted), *pad], 0, 0.0, [float(accepted + 1), *pad], False)
            accepted += 1
            if accepted % 10 == 0:
                time.sleep(0.005)
    ballast.unlink()
    wait_for(lambda: agent.stats["storage_error"] is None, timeout=40,
             message="the group commit to write what it held once the disk had room")
    agent.step([float(accepted), *pad], 0, 0.0, [float(accepted + 1), *pad], False)
    assert agent.pending == accepted + 1


@pytest.mark.timeout(180)
@pytest.mark.parametrize("durability", ["step", "batch"])
def test_a_full_disk_recovers_once_delivery_frees_space(down_server, user, agent_name, make_agent, small_filesystem,
                                                        durability):
    # A 4 MiB filesystem fills with the server away. Once the server is back, delivery must free the
    # space and step() accept again. It did not, in step mode: SQLite's log had taken the disk, and
    # the sent mark written before each request could not be, so nothing was ever sent again. Nor in
    # batch mode: the group commit wrote its backlog from memory into the space the first deletes
    # freed, 4 MiB segments at a time, and the disk was full again before delivery recorded anything.
    agent = make_agent(down_server, agent_name, create=False, queue_dir=small_filesystem / "q", durability=durability)
    accepted = 0
    deadline = time.monotonic() + 60
    with pytest.raises(StorageError) as full:
        while time.monotonic() < deadline:
            agent.step(obs_of(accepted), 0, 0.0, obs_of(accepted + 1), False)
            accepted += 1
    assert full.value.errno in (errno.ENOSPC, errno.EIO)  # batch mode used to give None, step mode 28
    down_server.start(timeout=120)
    recovered = False
    deadline = time.monotonic() + 60
    while not recovered and time.monotonic() < deadline:
        try:
            agent.step(obs_of(accepted), 0, 0.0, obs_of(accepted + 1), False)
            accepted += 1
            recovered = True
        except StorageError:
            time.sleep(0.05)
    assert recovered, f"step() still refused 60 s after the server came back: {agent.stats}"
    assert agent.flush(timeout=60), agent.stats
    log = api_for(down_server, user).log(agent_name)
    assert indices(log) == list(range(accepted))


def _database_bytes(queue_dir) -> int:
    """Bytes of the queue's SQLite database file (its log and index are bounded on their own)."""
    return (queue_dir / "data" / "cache.db").stat().st_size


@pytest.mark.timeout(180)
def test_the_disk_an_outage_took_is_given_back_once_it_drains(down_server, agent_name, make_agent, tmp_path):
    # Issue 15: SQLite frees the pages of delivered segments, but its file keeps its size until the
    # log is checkpointed past the last delete; before the fix about half of an outage's backlog
    # stayed on disk for good after it was delivered.
    queue = tmp_path / "queue"
    agent = make_agent(down_server, agent_name, create=False, queue_dir=queue)
    n = 80_000
    for i in range(n):
        agent.step(obs_of(i), i % 2, 0.0, obs_of(i + 1), False)
    # The group commit writes within commit_interval; the backlog is then several MB on disk.
    wait_for(lambda: _database_bytes(queue) > 5 * 2**20, timeout=30, message="the backlog to reach the disk")
    during = _database_bytes(queue)
    down_server.start(timeout=60)
    assert agent.flush(timeout=90), agent.stats
    # Given back in the flusher's next idle turn; the file keeps SQLite's few pages.
    wait_for(lambda: _database_bytes(queue) < 2**20, timeout=15,
             message=f"the database to shrink below 1 MiB ({during} bytes during the outage)")
    # The queue still works after the file shrank under it.
    for i in range(100):
        agent.step(obs_of(n + i), i % 2, 0.0, obs_of(n + i + 1), False)
    assert agent.flush(timeout=30), agent.stats

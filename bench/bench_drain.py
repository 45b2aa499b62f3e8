"""The disk an outage takes, and whether it is given back once the backlog is delivered (issue 15).

Our server (no learners) is stopped; one agent queues N CartPole steps (``durability="batch"``),
then the server comes back and the backlog drains, once with nothing else queued and once while
a second loop keeps calling step() at a steady 2,000 steps/s, as a robot would, until the backlog
is delivered; then nothing more is queued. Measured: the queue directory's size during the
outage, right after the drain and 3 s later, and the latency of the live loop's step() calls
during the drain. Two variants run side by side in one process: the shipped one, and one with
the give-back switched off (the flusher's idle turn skips it), which is how the queue behaved
before.

    python bench/bench_drain.py [--quick] [--steps N]
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from bench_growth import dir_bytes  # noqa: E402

LIVE_RATE = 2000  # steps/s of the live loop during the drain


def run(variant: str, live_rate: int, server: Any, steps: int, work: Path, pool: List[tuple]) -> Dict[str, Any]:
    from agents_bar_stream import RemoteAgent, StreamOptions
    from agents_bar_stream.storage import DiskQueue

    name = c.agent_name(f"drain-{variant}")
    c.create_agent(server.url, name)
    server.stop(timeout=60)
    queue_dir = work / f"{variant}-{live_rate}"
    original = DiskQueue.give_back_space
    if variant == "kept":
        DiskQueue.give_back_space = lambda self: False  # type: ignore[method-assign]
    client = c.our_client(server.url)
    agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=queue_dir))
    try:
        for i in range(steps):
            t = pool[i & 1023]
            agent.step(t[0], t[1], t[2], t[3], t[4])
        queue = agent._stream_obj.queue  # bench-only peek: wait for the group commit before measuring disk
        while queue.committed_pending() < steps:
            time.sleep(0.01)
        during = dir_bytes(queue_dir)["apparent"]
        server.start(timeout=120)

        lat = array("q")
        stop = threading.Event()

        def live() -> None:
            i = 0
            clock = time.perf_counter_ns
            next_at = time.perf_counter()
            while not stop.is_set():
                t = pool[i & 1023]
                t0 = clock()
                agent.step(t[0], t[1], t[2], t[3], t[4])
                lat.append(clock() - t0)
                i += 1
                next_at += 1 / live_rate
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

        thread = threading.Thread(target=live, daemon=True)
        started = time.perf_counter()
        if live_rate:
            thread.start()
        delivered = agent.flush(timeout=600)
        drain_s = time.perf_counter() - started
        stop.set()
        if live_rate:
            thread.join(10)
        delivered = agent.flush(timeout=60) and delivered  # and the live loop's last steps
        after = dir_bytes(queue_dir)["apparent"]
        time.sleep(3)  # nothing more is queued: the flusher idles (and gives the disk back, or not)
        later = dir_bytes(queue_dir)["apparent"]
    finally:
        DiskQueue.give_back_space = original  # type: ignore[method-assign]
        agent.close(5)
        client.close()
    s = c.summarize_ns(lat) if lat else {k: None for k in ("p50_us", "p99_us", "p99_9_us", "max_us")}
    print(f"  {variant}, live {live_rate}/s: {during / 2**20:.1f} MiB during, {later / 2**20:.2f} MiB after",
          file=sys.stderr, flush=True)
    return {"variant": variant, "live_rate": live_rate, "steps": steps, "delivered": delivered,
            "drain_s": drain_s, "during": during, "after_flush": after, "after_idle": later,
            "live_steps": len(lat), "latency": s}


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300_000, help="steps queued during the outage")
    args = parser.parse_args()
    steps = 30_000 if args.quick else args.steps
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    pool = c.transitions()
    results = []
    with c.Workdir("drain") as work:
        server = c.start_server(work / "server")
        try:
            for live_rate in (0, LIVE_RATE):
                for variant in ("given-back", "kept"):
                    results.append(run(variant, live_rate, server, steps, work, pool))
        finally:
            server.stop(timeout=60)
    rows = []
    for r in results:
        s = r["latency"]
        live = f"{r['live_rate']:,}/s" if r["live_rate"] else "none"
        rows.append([r["variant"], live, f"{r['steps']:,}", f"{r['during'] / 2**20:.1f}",
                     f"{r['after_flush'] / 2**20:.2f}",
                     f"{r['after_idle'] / 2**20:.2f}", f"{r['drain_s']:.1f}", f"{r['live_steps']:,}",
                     c.fmt_us(s["p50_us"]), c.fmt_us(s["p99_us"]), c.fmt_us(s["p99_9_us"]), c.fmt_us(s["max_us"])])
    md = "### Disk after an outage drains, and step() during the drain\n\n" + c.table(
        ["variant", "live loop", "queued", "MiB during outage", "MiB at flush()", "MiB idle after", "drain s",
         "live steps", "p50 µs", "p99 µs", "p99.9 µs", "max µs"], rows)
    md += ("\n\nMiB: every file in the queue directory, including the 1 MiB reserve and the write-ahead log "
           f"(cut back to 1 MiB). Live loop: step() at {LIVE_RATE:,}/s (or none) from the server's return until the "
           "backlog is delivered. `kept` is the same code with the idle give-back switched off.")
    print(md)
    c.save("bench_drain", {"live_rate": LIVE_RATE, "results": results}, md, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

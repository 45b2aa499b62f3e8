"""How step() and the queue behave as the backlog grows: 10k, 100k and 1M pending, server stopped.

One RemoteAgent steps against a loopback port where nothing listens, so nothing is ever
delivered. Every call is timed; at each checkpoint the loop pauses until the group commit has
written everything, then the queue directory's size (apparent bytes, and blocks allocated) and
the process's RSS are read. The latency reported at a checkpoint is that of the last
``--window`` calls before it (the first window skips 200 warm-up calls). ``durability="batch"``
goes to 1M; ``"step"`` (one SQLite transaction per step) to 100k, to keep the run short.

    python bench/bench_growth.py [--quick]
"""

from __future__ import annotations

import logging
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

WARMUP = 200


def dir_bytes(directory: Path) -> Dict[str, int]:
    apparent = allocated = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"apparent": apparent, "allocated": allocated}


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def grow(durability: str, checkpoints: List[int], window: int, queue_dir: Path, pool: List[tuple]) -> List[Dict]:
    from agents_bar_stream import RemoteAgent, StreamOptions
    from agents_bar_stream.protocol import StepEncoder

    wire = sum(len(StepEncoder().encode(*t)) + 1 for t in pool) / len(pool)
    client = c.our_client(c.dead_url())
    agent = RemoteAgent(
        client, c.agent_name("growth"), stream=StreamOptions(queue_dir=queue_dir, durability=durability)
    )
    agent.open_queue()
    rss0 = rss()
    step = agent.step
    for i in range(WARMUP):
        t = pool[i & 1023]
        step(t[0], t[1], t[2], t[3], t[4])
    queue = agent._stream_obj.queue  # bench-only peek: wait for the group commit before measuring disk
    lat = array("q", bytes(8 * checkpoints[-1]))
    clock = time.perf_counter_ns
    out = []
    done = 0
    for cp in checkpoints:
        for i in range(done, cp):
            t = pool[i & 1023]
            t0 = clock()
            step(t[0], t[1], t[2], t[3], t[4])
            lat[i] = clock() - t0
        done = cp
        while queue.committed_pending() < cp + WARMUP:
            time.sleep(0.005)
        pending = agent.pending
        size = dir_bytes(queue_dir)
        s = c.summarize_ns(lat[max(0, cp - window):cp])
        out.append({"durability": durability, "pending": pending, "latency": s, "disk": size,
                    "disk_bytes_per_transition": size["apparent"] / pending,
                    "allocated_bytes_per_transition": size["allocated"] / pending,
                    "wire_bytes_per_transition": wire, "rss": rss(), "rss_growth": rss() - rss0})
        print(f"  {durability}: {pending:,} pending, p50 {s['p50_us']:.2f} µs", file=sys.stderr, flush=True)
    agent.close(0)
    client.close()
    return out


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=10_000, help="calls timed before each checkpoint")
    args = parser.parse_args()
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    pool = c.transitions()
    plans = {"batch": [10_000, 100_000, 1_000_000], "step": [10_000, 100_000]}
    if args.quick:
        plans = {"batch": [10_000, 100_000], "step": [10_000]}
    rows_data: List[Dict[str, Any]] = []
    with c.Workdir("growth") as work:
        for durability, cps in plans.items():
            rows_data += grow(durability, cps, args.window, work / durability, pool)
    rows = []
    for r in rows_data:
        s = r["latency"]
        rows.append([r["durability"], f"{r['pending']:,}", c.fmt_us(s["p50_us"]), c.fmt_us(s["p99_us"]),
                     c.fmt_us(s["p99_9_us"]), c.fmt_us(s["max_us"]), f"{r['disk_bytes_per_transition']:.0f}",
                     f"{r['allocated_bytes_per_transition']:.0f}", f"{r['wire_bytes_per_transition']:.0f}",
                     f"{r['rss'] / 2**20:.0f} MiB"])
    md = "### step() latency and disk use as the backlog grows (server stopped)\n\n" + c.table(
        ["durability", "pending", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "disk B/transition",
         "allocated B/transition", "JSON B/transition", "client RSS"], rows)
    md += (f"\n\nLatency: the last {args.window:,} step() calls before each checkpoint. Disk: every file in the "
           "queue directory (SQLite database and WAL) over the pending count.")
    print(md)
    stem = c.save("bench_growth", {"window": args.window, "results": rows_data}, md, args.quick)
    plot(rows_data, stem.with_suffix(".png"))
    return 0


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    plt = c.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for durability in ("batch", "step"):
        rs = [r for r in rows if r["durability"] == durability]
        if not rs:
            continue
        x = [r["pending"] for r in rs]
        for q, style in (("p50_us", "-o"), ("p99_us", "--o")):
            a1.loglog(x, [r["latency"][q] for r in rs], style, label=f"{durability} {q[:-3]}")
        a2.semilogx(x, [r["disk_bytes_per_transition"] for r in rs], "-o", label=f"{durability} disk")
    a2.axhline(rows[0]["wire_bytes_per_transition"], color="gray", linestyle=":", label="JSON bytes")
    a1.set_xlabel("pending transitions")
    a1.set_ylabel("step() latency (µs)")
    a2.set_xlabel("pending transitions")
    a2.set_ylabel("disk bytes per transition")
    for ax in (a1, a2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

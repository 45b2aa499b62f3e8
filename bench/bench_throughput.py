"""Delivered transitions per second, from step() to the server's acknowledgement.

N steps are taken as fast as the loop goes, then ``flush()``; the rate is N over the time from
the first step() to flush() returning (every step acknowledged). The targets: the project's
server (started with ``--no-learn``, so no learner competes for the CPU) and bench/noop_server.py
(parses each body with orjson and acknowledges it, stores nothing: the ceiling of the client and
HTTP on loopback). Each repetition alternates the targets; medians are reported. In the same run
the published client does the same against both (its step() is one POST /step per transition
that returns after the server answered, so its rate is calls over wall time).

    python bench/bench_throughput.py [--quick] [--n N] [--repeat R]
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

from agents_bar_stream.config import DEFAULT_BATCH_SIZE  # noqa: E402


def ours(url: str, name: str, queue_dir: Path, pool: List[tuple], n: int) -> Dict[str, Any]:
    from agents_bar_stream import RemoteAgent, StreamOptions

    client = c.our_client(url)
    agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=queue_dir))
    step = agent.step
    for i in range(100):  # warm-up: queue opened, logged in, server probed, connection open
        t = pool[i]
        step(t[0], t[1], t[2], t[3], t[4])
    if not agent.flush(60):
        raise RuntimeError(f"warm-up not delivered to {url}")
    clock = time.perf_counter
    t0 = clock()
    for i in range(n):
        t = pool[i & 1023]
        step(t[0], t[1], t[2], t[3], t[4])
    t1 = clock()
    ok = agent.flush(300)
    t2 = clock()
    stats = agent.stats
    agent.close(5)
    client.close()
    if not ok or stats["delivered"] != n + 100:
        raise RuntimeError(f"not everything was delivered: {stats}")
    return {"rate": n / (t2 - t0), "step_loop_rate": n / (t1 - t0), "seconds": t2 - t0,
            "flush_wait_s": t2 - t1, "delivered": stats["delivered"]}


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="steps per repetition (default 200000; quick 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per target (default 3)")
    parser.add_argument("--published-n", type=int, help="steps of the published client (default 2000; quick 300)")
    args = parser.parse_args()
    n = args.n or (20_000 if args.quick else 200_000)
    pub_n = args.published_n or (300 if args.quick else 2000)
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    pool = c.transitions()
    runs: Dict[str, List[Dict[str, Any]]] = {"ours → our server": [], "ours → no-op": []}
    published: Dict[str, Dict[str, Any]] = {}
    notes: List[str] = []
    with c.Workdir("throughput") as work:
        server = c.start_server(work / "server")
        noop = c.start_noop_server()
        try:
            targets = {"our server": server.url, "no-op": noop.url}  # type: ignore[attr-defined]
            for rep in range(args.repeat):
                for label, url in targets.items():
                    name = c.agent_name("tput")
                    if label == "our server":
                        c.create_agent(server.url, name)
                    print(f"  rep {rep + 1}: ours → {label}, {n} steps ...", file=sys.stderr, flush=True)
                    runs[f"ours → {label}"].append(ours(url, name, work / "q" / f"{label}-{rep}", pool, n))
            python = c.compat_python()
            if python is None:
                notes.append(c.SKIP_PUBLISHED)
            else:
                for label, url in targets.items():
                    name = c.agent_name("tput-pub")
                    if label == "our server":
                        c.create_agent(server.url, name)
                    print(f"  published → {label}, {pub_n} steps ...", file=sys.stderr, flush=True)
                    with c.Published(python, url, name) as pub:
                        pub.run("step", 20)
                        r = pub.run("step", pub_n)
                    published[f"published → {label}"] = {"rate": pub_n / (r["wall_ns"] / 1e9), "n": pub_n,
                                                          "latency": c.summarize_ns(r["latencies_ns"])}
        finally:
            c.stop_process(noop)
            server.stop()

    rows = []
    summary: Dict[str, Any] = {}
    checks = []
    targets_rate = {"ours → our server": 100_000, "ours → no-op": 150_000}
    for key, reps in runs.items():
        rate = statistics.median(r["rate"] for r in reps)
        loop = statistics.median(r["step_loop_rate"] for r in reps)
        pub = published.get(key.replace("ours", "published"))
        ratio = rate / pub["rate"] if pub else None
        ok_rate = rate >= targets_rate[key]
        ok_ratio = None if ratio is None else ratio >= 200
        checks += [{"target": f"{key} >= {targets_rate[key]:,}/s", "ok": ok_rate},
                   {"target": f"{key} >= 200x published", "ok": ok_ratio, "ratio": ratio}]
        summary[key] = {"median_rate": rate, "median_step_loop_rate": loop, "ratio_vs_published": ratio,
                        "reps": reps}
        rows.append([key, f"{n:,} × {len(reps)}", c.fmt_rate(rate), c.fmt_rate(min(r["rate"] for r in reps)),
                     c.fmt_rate(loop), "–" if ratio is None else f"{ratio:,.0f}×",
                     f"≥ {targets_rate[key] // 1000}k/s {c.verdict(ok_rate)}; ≥ 200× {c.verdict(ok_ratio)}"])
    for key, pub in published.items():
        rows.append([key, f"{pub['n']:,}", c.fmt_rate(pub["rate"]), "", "", "1×",
                     f"p50 {c.fmt_us(pub['latency']['p50_us'])} µs per step"])
    md = "### Delivered transitions/s (step() → acknowledged)\n\n" + c.table(
        ["client → target", "steps × reps", "delivered/s (median)", "worst rep", "step() loop alone /s",
         "ours / published", "target"], rows)
    md += (
        "\n\nOur server runs with `--no-learn` (no learner competes for the 2 cores) and its default "
        f'`--synchronous full`; the client uses its defaults (durability="batch", batch_size={DEFAULT_BATCH_SIZE}).'
    )
    for note in notes:
        md += f"\n\n{note}"
    print(md)
    stem = c.save("bench_throughput", {"n": n, "repeat": args.repeat, "results": summary, "published": published,
                                       "checks": checks, "notes": notes}, md, args.quick)
    plot(summary, published, stem.with_suffix(".png"))
    return 0


def plot(summary: Dict[str, Any], published: Dict[str, Any], path: Path) -> None:
    plt = c.pyplot()
    labels = list(summary) + list(published)
    values = [summary[k]["median_rate"] for k in summary] + [published[k]["rate"] for k in published]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.bar(labels, values, color=["tab:blue"] * len(summary) + ["tab:gray"] * len(published))
    ax.set_yscale("log")
    ax.set_ylabel("delivered transitions/s (log)")
    ax.axhline(100_000, color="tab:red", linestyle=":", label="100k/s")
    ax.axhline(150_000, color="tab:orange", linestyle=":", label="150k/s")
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

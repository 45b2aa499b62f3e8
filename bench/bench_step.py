"""step() latency: p50/p99/p99.9/max over many calls, both durabilities, three server states.

States: (a) the server healthy on loopback, (b) behind a FlakyProxy adding 50 ms per chunk each
way (100 ms per round trip), (c) stopped (a loopback port where nothing listens). In the same run:
the published client's step() (its own interpreter, against the same healthy server), a bare
``diskcache.Deque.append`` of the same bytes and a bare ``orjson.dumps`` of the transition.
Every call is timed alone with ``time.perf_counter_ns``; the queue is opened and 200 steps are
taken before timing starts, so the first step's queue opening is not counted.

    python bench/bench_step.py [--quick] [--n N]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

WARMUP = 200


def time_calls(fn: Callable[..., Any], pool: List[tuple], n: int) -> List[int]:
    clock = time.perf_counter_ns
    lat = [0] * n
    for i in range(n):
        t = pool[i & 1023]
        t0 = clock()
        fn(t[0], t[1], t[2], t[3], t[4])
        lat[i] = clock() - t0
    return lat


def run_agent(url: str, name: str, queue_dir: Path, durability: str, pool: List[tuple], n: int,
              close_timeout: float) -> Dict[str, Any]:
    from agents_bar_stream import RemoteAgent, StreamOptions

    client = c.our_client(url)
    agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=queue_dir, durability=durability))
    agent.open_queue()
    time_calls(agent.step, pool, WARMUP)
    lat = time_calls(agent.step, pool, n)
    stats = agent.stats
    agent.close(timeout=close_timeout)
    client.close()
    keep = ("enqueued", "delivered", "pending", "retries", "mode", "online")
    return {"latency": c.summarize_ns(lat), "stats_after": {k: stats.get(k) for k in keep}, "raw": lat}


def bare_deque(directory: Path, pool: List[tuple], n: int) -> List[int]:
    import diskcache

    from agents_bar_stream.protocol import StepEncoder

    enc = StepEncoder()
    data = [enc.encode(*t) for t in pool]
    deque = diskcache.Deque(directory=str(directory))
    append = deque.append
    clock = time.perf_counter_ns
    for i in range(WARMUP):
        append(data[i & 1023])
    lat = [0] * n
    for i in range(n):
        b = data[i & 1023]
        t0 = clock()
        append(b)
        lat[i] = clock() - t0
    return lat


def bare_orjson(pool: List[tuple], n: int) -> List[int]:
    import orjson

    dumps = orjson.dumps
    dicts = [{"obs": t[0], "action": [t[1]], "reward": t[2], "next_obs": t[3], "done": t[4]} for t in pool]
    clock = time.perf_counter_ns
    lat = [0] * n
    for i in range(n):
        d = dicts[i & 1023]
        t0 = clock()
        dumps(d)
        lat[i] = clock() - t0
    return lat


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="timed calls per configuration (default 100000; quick 10000)")
    parser.add_argument("--published-n", type=int, help="timed calls of the published client (default 2000)")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    pub_n = args.published_n or (300 if args.quick else 2000)
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    from agents_bar_stream.flaky import FlakyProxy

    pool = c.transitions()
    results: Dict[str, Dict[str, Any]] = {}
    raws: Dict[str, List[int]] = {}
    notes: List[str] = []
    with c.Workdir("step") as work:
        server = c.start_server(work / "server")
        proxy = FlakyProxy(("127.0.0.1", server.port), latency=0.05).start()
        try:
            urls = {"healthy": server.url, "slow (+100 ms RTT)": proxy.url, "stopped": c.dead_url()}
            for durability in ("batch", "step"):
                for state, url in urls.items():
                    name = c.agent_name(f"step-{durability}")
                    if state != "stopped":
                        c.create_agent(server.url, name)
                    key = f"{durability} / {state}"
                    print(f"  {key}: {n} steps ...", file=sys.stderr, flush=True)
                    r = run_agent(url, name, work / "queues" / key.replace(" ", "").replace("/", "_"),
                                  durability, pool, n, close_timeout=60.0 if state == "healthy" else 0.5)
                    raws[key] = r.pop("raw")
                    results[key] = r
            print("  bare diskcache.Deque.append ...", file=sys.stderr, flush=True)
            raws["bare Deque.append"] = bare_deque(work / "deque", pool, n)
            print("  bare orjson.dumps ...", file=sys.stderr, flush=True)
            raws["bare orjson.dumps"] = bare_orjson(pool, n)
            python = c.compat_python()
            if python is None:
                notes.append(c.SKIP_PUBLISHED)
            else:
                name = c.agent_name("step-published")
                c.create_agent(server.url, name)
                print(f"  published client: {pub_n} steps ...", file=sys.stderr, flush=True)
                with c.Published(python, server.url, name) as pub:
                    pub.run("step", 20)  # warm-up
                    raws["published client / healthy"] = pub.run("step", pub_n)["latencies_ns"]
        finally:
            proxy.stop()
            server.stop()
    for key in ("bare Deque.append", "bare orjson.dumps", "published client / healthy"):
        if key in raws:
            results[key] = {"latency": c.summarize_ns(raws[key])}
    overhead = c.timer_overhead_ns()

    deque_p50 = results["bare Deque.append"]["latency"]["p50_us"]
    rows = []
    checks: List[Dict[str, Any]] = []
    for key, r in results.items():
        s = r["latency"]
        target = ""
        if key.startswith("batch /"):
            ok50, ok99 = s["p50_us"] <= 5.0, s["p99_us"] <= 50.0
            target = f"p50 ≤ 5 µs {c.verdict(ok50)}; p99 ≤ 50 µs {c.verdict(ok99)}"
            checks += [{"target": f"{key} p50 <= 5 us", "ok": ok50}, {"target": f"{key} p99 <= 50 us", "ok": ok99}]
        elif key.startswith("step /"):
            ratio = s["p50_us"] / deque_p50
            ok = ratio <= 1.2
            target = f"p50 = {ratio:.2f}× Deque.append (≤ 1.2×) {c.verdict(ok)}"
            checks.append({"target": f"{key} p50 <= 1.2x bare Deque.append", "ok": ok, "ratio": ratio})
        rows.append([key, f"{s['n']:,}", c.fmt_us(s["p50_us"]), c.fmt_us(s["p99_us"]), c.fmt_us(s["p99_9_us"]),
                     c.fmt_us(s["max_us"]), target])
    md = "### step() latency (µs)\n\n" + c.table(["configuration", "calls", "p50", "p99", "p99.9", "max", "target"],
                                                rows)
    if "published client / healthy" in results:
        pub50 = results["published client / healthy"]["latency"]["p50_us"]
        md += (f"\n\nPublished client's step p50 / ours (batch, healthy) p50: "
               f"{pub50 / results['batch / healthy']['latency']['p50_us']:,.0f}×.")
    md += (f"\n\nTimer overhead (two perf_counter_ns calls, median): {overhead} ns, included in every number. "
           "Server: `--no-learn`. CartPole-shaped transitions (4 floats, discrete action), plain lists.")
    for note in notes:
        md += f"\n\n{note}"
    print(md)
    stem = c.save("bench_step", {"n": n, "published_n": pub_n, "timer_overhead_ns": overhead, "results": results,
                                 "checks": checks, "notes": notes}, md, args.quick)
    plot(raws, stem.with_suffix(".png"))
    return 0


def plot(raws: Dict[str, List[int]], path: Path) -> None:
    import numpy as np

    plt = c.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, group in zip(axes, ("batch", "step"), strict=True):
        for key, lat in raws.items():
            if key.startswith(group + " /") or key.startswith("bare") or key.startswith("published"):
                a = np.sort(np.asarray(lat, dtype=np.float64) / 1000.0)
                surv = 1.0 - np.arange(a.size) / a.size
                ax.loglog(a, surv, label=key, linestyle="-" if key.startswith(group) else "--")
        ax.set_title(f'durability="{group}"')
        ax.set_xlabel("step() latency (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("fraction of calls slower than x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

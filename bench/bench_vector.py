"""step_many() against N step() calls: the cost of one vector-environment step of 8 environments.

The server is stopped (a loopback port where nothing listens), so only the client's side is
measured. Rows are CartPole-shaped numpy float32 observations, int64 actions, float32 rewards and
bool dones, as gymnasium's vector API hands them over. Each variant is one agent with its own
queue; the variants alternate in blocks (``--blocks`` of ``--calls`` vector steps each), both
durabilities, so that the machine's noise falls on all of them alike. Reported per vector step
(8 rows): the median and p99 over every call of the variant.

    python bench/bench_vector.py [--quick]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

N_ENVS = 8


def batches(pool: List[tuple], count: int) -> List[tuple]:
    import numpy as np

    out = []
    for b in range(count):
        rows = [pool[(b * N_ENVS + i) & 1023] for i in range(N_ENVS)]
        out.append((np.array([r[0] for r in rows], dtype=np.float32), np.array([r[1] for r in rows], dtype=np.int64),
                    np.array([r[2] for r in rows], dtype=np.float32), np.array([r[3] for r in rows], dtype=np.float32),
                    np.array([r[4] for r in rows], dtype=bool)))
    return out


def one_by_one(agent: Any, obs: Any, actions: Any, rewards: Any, next_obs: Any, dones: Any) -> None:
    """What a user writes without step_many: unroll the batch (numpy rows and scalars as they come)."""
    for i in range(len(obs)):
        agent.step(obs[i], int(actions[i]), float(rewards[i]), next_obs[i], bool(dones[i]))


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000, help="vector steps per block")
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.calls = 4, 300
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    from agents_bar_stream import RemoteAgent, StreamOptions

    data = batches(c.transitions(), 1024)
    url = c.dead_url()
    results: List[Dict[str, Any]] = []
    with c.Workdir("vector") as work:
        client = c.our_client(url)
        for durability in ("batch", "step"):
            calls = args.calls if durability == "batch" else max(50, args.calls // 10)
            agents = {}
            for variant in ("step_many", "8 x step"):
                agent = RemoteAgent(client, c.agent_name("vector"), stream=StreamOptions(
                    queue_dir=work / f"{durability}-{variant.replace(' ', '')}", durability=durability))
                agent.open_queue()
                agents[variant] = agent
            samples: Dict[str, List[int]] = {v: [] for v in agents}
            clock = time.perf_counter_ns
            for block in range(args.blocks):
                for variant, agent in agents.items():
                    fn = agent.step_many if variant == "step_many" else (
                        lambda *a, _agent=agent: one_by_one(_agent, *a))
                    for k in range(calls):
                        b = data[(block * calls + k) & 1023]
                        t0 = clock()
                        fn(b[0], b[1], b[2], b[3], b[4])
                        samples[variant].append(clock() - t0)
            for variant, agent in agents.items():
                s = c.summarize_ns(samples[variant])
                results.append({"durability": durability, "variant": variant, "latency": s,
                                "per_row_p50_us": s["p50_us"] / N_ENVS, "enqueued": agent.stats["enqueued"]})
                agent.close(0)
        client.close()
    rows = []
    for durability in ("batch", "step"):
        pair = {r["variant"]: r for r in results if r["durability"] == durability}
        for variant, r in pair.items():
            s = r["latency"]
            ratio = pair["8 x step"]["latency"]["p50_us"] / s["p50_us"]
            rows.append([durability, variant, c.fmt_us(s["p50_us"]), c.fmt_us(s["p99_us"]),
                         c.fmt_us(r["per_row_p50_us"]), f"{ratio:.2f}x", f"{r['enqueued']:,}"])
    md = f"### One vector step of {N_ENVS} CartPole environments: step_many() against {N_ENVS} step() calls\n\n"
    md += c.table(["durability", "variant", "p50 µs", "p99 µs", "p50 µs per row", "speed-up vs 8 x step",
                   "rows queued"], rows)
    md += (f"\n\nServer stopped; {args.blocks} alternating blocks of {args.calls:,} vector steps (`step`: a tenth "
           "of that, one disk transaction per call). `8 x step` unrolls the numpy batch by hand, as a user "
           "would without step_many().")
    print(md)
    c.save("bench_vector", {"blocks": args.blocks, "calls": args.calls, "results": results}, md, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

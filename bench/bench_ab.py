"""Two source trees of this project side by side: step() latency and delivered steps/s, interleaved.

For a change that must not move the figures (a refactor), run the tree before it and the tree after
it in one run, alternating A, B, A, B, ... so that the machine's drift (shared, noisy cores) falls on
both alike; report the medians of each and their ratio.

    python bench/bench_ab.py --before /path/to/old/tree --after /path/to/new/tree [--rounds 5]

Each measurement runs in a fresh interpreter with ``PYTHONPATH`` set to the tree, so each tree's own
``agents_bar_stream`` (client and server) is the one imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import agents_bar_stream
from agents_bar_stream import Client, RemoteAgent, StreamOptions

kind, n = sys.argv[1], int(sys.argv[2])
obs = [0.01, -0.02, 0.03, 0.04]
out = {"tree": str(Path(agents_bar_stream.__file__).parent.parent)}
with tempfile.TemporaryDirectory() as tmp:
    if kind == "step":
        # step() alone: a server that is not there, CartPole-sized lists, the default batch durability.
        agent = RemoteAgent(Client(base_url="http://127.0.0.1:9", access_token="t"), "ab-step",
                            stream=StreamOptions(queue_dir=Path(tmp) / "q"))
        agent.open_queue()
        for i in range(200):
            agent.step(obs, i & 1, 1.0, obs, False)
        clock = time.perf_counter_ns
        lat = [0] * n
        for i in range(n):
            t0 = clock()
            agent.step(obs, i & 1, 1.0, obs, False)
            lat[i] = clock() - t0
        agent.close(timeout=0)
        lat.sort()
        out.update(p50_us=lat[n // 2] / 1000, p99_us=lat[n * 99 // 100] / 1000)
    else:
        # Delivery: n steps queued, then the time until the server acknowledged them all.
        from agents_bar_stream.server.process import LocalServer
        srv = LocalServer(Path(tmp) / "server", users=[("ab", "ab-password-1")])
        srv.start(timeout=120)
        try:
            client = Client(base_url=srv.url, username="ab", password="ab-password-1")
            agent = RemoteAgent(client, "ab-deliver", stream=StreamOptions(queue_dir=Path(tmp) / "q"))
            agent.create_agent(obs_size=4, action_size=2, agent_model="dqn")
            agent.open_queue()
            t0 = time.perf_counter()
            for i in range(n):
                agent.step(obs, i & 1, 1.0, obs, i % 200 == 199)
            assert agent.flush(timeout=300)
            took = time.perf_counter() - t0
            out.update(delivered_per_s=n / took, delivered=agent.stats["delivered"])
            agent.close(timeout=5)
        finally:
            srv.stop(timeout=30)
print(json.dumps(out))
"""


def run(tree: Path, kind: str, n: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as cwd:  # never import the tree of the current directory
        proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(n)], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{tree} {kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["tree"]).resolve() != tree.resolve():
        raise SystemExit(f"measured {result['tree']}, not {tree}: check PYTHONPATH")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50_000, help="timed step() calls per round")
    parser.add_argument("--deliver", type=int, default=100_000, help="steps delivered per round")
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after}
    results: dict = {name: {"p50_us": [], "p99_us": [], "delivered_per_s": []} for name in trees}
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
        for name, tree in order:
            s = run(tree, "step", args.steps)
            d = run(tree, "deliver", args.deliver)
            results[name]["p50_us"].append(s["p50_us"])
            results[name]["p99_us"].append(s["p99_us"])
            results[name]["delivered_per_s"].append(d["delivered_per_s"])
            print(f"round {r + 1} {name}: step p50 {s['p50_us']:.2f} us, p99 {s['p99_us']:.2f} us, "
                  f"delivered {d['delivered_per_s']:,.0f}/s", flush=True)
    print("\nmedians over", args.rounds, "rounds (after / before):")
    for key, label in (("p50_us", "step() p50 (us)"), ("p99_us", "step() p99 (us)"),
                       ("delivered_per_s", "delivered/s")):
        b, a = statistics.median(results["before"][key]), statistics.median(results["after"][key])
        print(f"  {label:18} before {b:12,.2f}  after {a:12,.2f}  ratio {a / b:.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""The published ``agents-bar==0.4.2`` client, driven by the benchmarks over a pipe.

Run by ``_common.Published`` with the interpreter that has the published client alone; imports
nothing but it and the standard library. Credentials come from ``AGENTS_BAR_USER``/``AGENTS_BAR_PASS``.
Reads one JSON command a line on stdin (``{"op": "step"|"act", "n": N}``) and answers one JSON
line: per-call latencies in ns and the wall time of the whole block.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--agent", required=True)
    args = parser.parse_args()
    try:
        import agents_bar
        from agents_bar import Client, RemoteAgent

        client = Client(base_url=args.url)
        agent = RemoteAgent(client, agent_name=args.agent, obs_size=4, action_size=2, agent_model="DQN")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    rng = random.Random(1)
    pool = []
    for i in range(1024):
        obs = [rng.uniform(-2.4, 2.4), rng.uniform(-3, 3), rng.uniform(-0.2, 0.2), rng.uniform(-3, 3)]
        pool.append((obs, rng.randrange(2), 1.0, [x + 0.01 for x in obs], i % 200 == 199))
    hello = {"version": getattr(agents_bar, "__version__", "?"), "python": sys.version.split()[0]}
    print(json.dumps(hello), flush=True)
    clock = time.perf_counter_ns
    for line in sys.stdin:
        cmd = json.loads(line)
        n = int(cmd["n"])
        lat = [0] * n
        try:
            start = clock()
            if cmd["op"] == "step":
                for i in range(n):
                    t = pool[i & 1023]
                    t0 = clock()
                    agent.step(t[0], t[1], t[2], t[3], t[4])
                    lat[i] = clock() - t0
            elif cmd["op"] == "act":
                for i in range(n):
                    obs = pool[i & 1023][0]
                    t0 = clock()
                    agent.act(obs, noise=0.0)
                    lat[i] = clock() - t0
            else:
                raise ValueError(f"unknown op {cmd['op']!r}")
            wall = clock() - start
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        print(json.dumps({"latencies_ns": lat, "wall_ns": wall}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

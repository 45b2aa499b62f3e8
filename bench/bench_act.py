"""act() round trip: ours vs a bare ``requests.Session.post`` of the same body vs the published client.

All three ask the same agent on the same server (``--no-learn``: no learner holds the agent's
lock) for an action on a CartPole observation. They run in alternating blocks (default 20 blocks
of 100 calls each), so that a burst of load on the shared machine hits all three alike; each call
is timed with ``time.perf_counter_ns``. The bare post is the floor for a Python client using
requests: a kept-alive Session, the body already encoded, no parsing of the answer beyond bytes.

    python bench/bench_act.py [--quick] [--blocks B] [--block-size K]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, help="alternating blocks (default 20; quick 3)")
    parser.add_argument("--block-size", type=int, default=100, help="calls per block (default 100)")
    args = parser.parse_args()
    blocks = args.blocks or (3 if args.quick else 20)
    k = args.block_size
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    import orjson
    import requests

    from agents_bar_stream import RemoteAgent, StreamOptions

    pool = c.transitions()
    lat: Dict[str, List[int]] = {"ours: RemoteAgent.act": [], "bare requests.Session.post": []}
    notes: List[str] = []
    clock = time.perf_counter_ns
    with c.Workdir("act") as work:
        server = c.start_server(work / "server")
        published = None
        try:
            name = c.agent_name("act")
            c.create_agent(server.url, name)
            client = c.our_client(server.url)
            agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=work / "queue"))
            session = requests.Session()
            token = session.post(server.api_url + "/login/access-token",
                                 data={"username": c.USER[0], "password": c.USER[1]}).json()["access_token"]
            act_url = f"{server.api_url}/agents/{name}/act"
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            params = {"noise": 0.0}
            bodies = [orjson.dumps(t[0]) for t in pool]

            def bare(i: int) -> None:
                r = session.post(act_url, data=bodies[i & 1023], params=params, headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"bare post: {r.status_code} {r.text}")
                r.content  # noqa: B018 - read the body, as any caller must

            python = c.compat_python()
            if python is None:
                notes.append(c.SKIP_PUBLISHED)
            else:
                published = c.Published(python, server.url, name)
                lat["published client: RemoteAgent.act"] = []
            for i in range(20):  # warm-up: connections open, model loaded
                agent.act(pool[i][0])
                bare(i)
            if published is not None:
                published.run("act", 20)
            for b in range(blocks):
                print(f"  block {b + 1}/{blocks}", file=sys.stderr, flush=True)
                out = lat["ours: RemoteAgent.act"]
                for i in range(k):
                    obs = pool[i & 1023][0]
                    t0 = clock()
                    agent.act(obs)
                    out.append(clock() - t0)
                out = lat["bare requests.Session.post"]
                for i in range(k):
                    t0 = clock()
                    bare(i)
                    out.append(clock() - t0)
                if published is not None:
                    lat["published client: RemoteAgent.act"] += published.run("act", k)["latencies_ns"]
            agent.close(1)
            client.close()
        finally:
            if published is not None:
                published.close()
            server.stop()

    summary = {key: c.summarize_ns(v) for key, v in lat.items()}
    ours = summary["ours: RemoteAgent.act"]["p50_us"]
    bare_p50 = summary["bare requests.Session.post"]["p50_us"]
    pub = summary.get("published client: RemoteAgent.act", {}).get("p50_us")
    ok_bare = ours <= 1.10 * bare_p50
    ok_pub = None if pub is None else ours < pub
    rows = []
    for key, s in summary.items():
        rows.append([key, f"{s['n']:,}", c.fmt_us(s["p50_us"]), c.fmt_us(s["p90_us"]), c.fmt_us(s["p99_us"]),
                     c.fmt_us(s["max_us"]), f"{s['p50_us'] / bare_p50:.2f}×"])
    md = "### act() round trip (µs)\n\n" + c.table(["client", "calls", "p50", "p90", "p99", "max", "p50 / bare"], rows)
    md += (f"\n\nTargets: ours within 10% of the bare Session.post (p50 {ours / bare_p50:.2f}×) {c.verdict(ok_bare)}; "
           f"faster than the published client (p50 "
           f"{'–' if pub is None else f'{pub / ours:.1f}× slower than ours'}) {c.verdict(ok_pub)}. "
           f"{blocks} alternating blocks of {k} calls; server `--no-learn`.")
    for note in notes:
        md += f"\n\n{note}"
    print(md)
    checks = [{"target": "act p50 <= 1.1x bare Session.post", "ok": ok_bare, "ratio": ours / bare_p50},
              {"target": "act faster than published", "ok": ok_pub}]
    stem = c.save("bench_act", {"blocks": blocks, "block_size": k, "results": summary, "checks": checks,
                                "notes": notes}, md, args.quick)
    plot(lat, stem.with_suffix(".png"))
    return 0


def plot(lat: Dict[str, List[int]], path: Path) -> None:
    plt = c.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    data = [[x / 1000 for x in v] for v in lat.values()]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(lat) + 1), [k.replace(": ", "\n") for k in lat])
    ax.set_yscale("log")
    ax.set_ylabel("round trip (µs, log; whiskers 1.5 IQR)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

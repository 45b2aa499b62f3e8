"""act() round trip: ours vs a bare ``requests.Session.post`` of the same body vs the published client,
and ours with ``policy="local"`` (the agent's exported policy run here, issue 11).

All ask the same agent on the same server (``--no-learn``: no learner holds the agent's
lock) for an action on a CartPole observation. They run in alternating blocks (default 20 blocks
of 100 calls each), so that a burst of load on the shared machine hits all three alike; each call
is timed with ``time.perf_counter_ns``. The bare post is the floor for a Python client using
requests: a kept-alive Session, the body already encoded, no parsing of the answer beyond bytes.

The local policy comes from the server's ``GET /agents/{name}/policy``; a server without that
route (404) gets a model exported in this process from an agent of the same config instead (same
network shape, so the same cost; noted in the output). Then a CartPole loop (gymnasium when
installed, else a fake environment of the same shapes) runs act() + step() with each mode, in
alternating blocks, and reports iterations per second.

Last, the same three act() paths on a second server that is learning while they ask: a feeder
streams transitions to the agent the whole time (about 2,000 a second, more than its learner keeps up
with), so the learner holds the agent's lock most of the time, as it does in a real run.

    python bench/bench_act.py [--quick] [--blocks B] [--block-size K]
"""

from __future__ import annotations

import logging
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, help="alternating blocks (default 20; quick 3)")
    parser.add_argument("--block-size", type=int, default=100, help="calls per block (default 100)")
    parser.add_argument("--loop-steps", type=int, help="CartPole loop iterations per block and mode (default 500)")
    args = parser.parse_args()
    blocks = args.blocks or (3 if args.quick else 20)
    k = args.block_size
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)

    from agents_bar_stream import RemoteAgent, StreamOptions

    pool = c.transitions()
    lat: Dict[str, List[int]] = {"ours: RemoteAgent.act": [], "bare requests.Session.post": [],
                                 "ours: RemoteAgent.act, policy='local'": []}
    loop_rates: Dict[str, List[float]] = {"remote": [], "local": [], "auto": []}
    loop_n = args.loop_steps or (200 if args.quick else 500)
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
            local = RemoteAgent(client, name, policy="local", stream=StreamOptions(queue_dir=work / "queue-local"))
            auto = RemoteAgent(client, name, policy="auto", stream=StreamOptions(queue_dir=work / "queue-auto"))
            served = True
            for a in (local, auto):
                if not a.refresh_policy(timeout=30):  # 404: a server without the policy route
                    served = False
                    a._policy_source().load(_exported_policy())
            if not served:
                notes.append("The server has no policy route (404): the local model was exported in this "
                             "process from an agent of the same config (same network, same cost).")
            bare = _bare_post(server, name, pool, check=True)

            python = c.compat_python()
            if python is None:
                notes.append(c.SKIP_PUBLISHED)
            else:
                published = c.Published(python, server.url, name)
                lat["published client: RemoteAgent.act"] = []
            for i in range(20):  # warm-up: connections open, model loaded
                agent.act(pool[i][0])
                local.act(pool[i][0])
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
                out = lat["ours: RemoteAgent.act, policy='local'"]
                for i in range(k):
                    obs = pool[i & 1023][0]
                    t0 = clock()
                    local.act(obs)
                    out.append(clock() - t0)
                if published is not None:
                    lat["published client: RemoteAgent.act"] += published.run("act", k)["latencies_ns"]
            env = _env()
            for b in range(blocks):
                print(f"  loop block {b + 1}/{blocks}", file=sys.stderr, flush=True)
                for mode, a in (("remote", agent), ("local", local), ("auto", auto)):
                    loop_rates[mode].append(_loop(env, a, loop_n))
            notes.append(f"CartPole loop: {env.name}; act() + step() per iteration, {loop_n} iterations per "
                         f"block and mode, {blocks} alternating blocks.")
            local.close(1)
            auto.close(1)
            agent.close(1)
            client.close()
            learning = _learning_server(work, pool, blocks, k, notes)
        finally:
            if published is not None:
                published.close()
            server.stop()

    summary = {key: c.summarize_ns(v) for key, v in lat.items()}
    local_p50 = summary["ours: RemoteAgent.act, policy='local'"]["p50_us"]
    ours = summary["ours: RemoteAgent.act"]["p50_us"]
    bare_p50 = summary["bare requests.Session.post"]["p50_us"]
    pub = summary.get("published client: RemoteAgent.act", {}).get("p50_us")
    ok_bare = ours <= 1.10 * bare_p50
    ok_pub = None if pub is None else ours < pub
    rows = []
    for key, s in summary.items():
        rows.append([key, f"{s['n']:,}", c.fmt_us(s["p50_us"]), c.fmt_us(s["p90_us"]), c.fmt_us(s["p99_us"]),
                     c.fmt_us(s["max_us"]), _ratio(s["p50_us"] / bare_p50)])
    md = "### act() round trip (µs)\n\n" + c.table(["client", "calls", "p50", "p90", "p99", "max", "p50 / bare"], rows)
    md += (f"\n\nTargets: ours within 10% of the bare Session.post (p50 {ours / bare_p50:.2f}×) {c.verdict(ok_bare)}; "
           f"faster than the published client (p50 "
           f"{'–' if pub is None else f'{pub / ours:.1f}× slower than ours'}) {c.verdict(ok_pub)}. "
           f"{blocks} alternating blocks of {k} calls; server `--no-learn`.")
    ok_local = local_p50 <= 100
    ok_ratio = ours / local_p50 >= 20
    md += (f"\n\nLocal policy: act() p50 {c.fmt_us(local_p50)} µs (target <= 100) {c.verdict(ok_local)}; "
           f"{ours / local_p50:.0f}× faster than remote act() (target >= 20×) {c.verdict(ok_ratio)}; "
           f"{bare_p50 / local_p50:.0f}× faster than the bare post.")
    busy = {key: c.summarize_ns(v) for key, v in learning.items()}
    busy_rows = [[key, f"{s['n']:,}", c.fmt_us(s["p50_us"]), c.fmt_us(s["p90_us"]), c.fmt_us(s["p99_us"]),
                  c.fmt_us(s["max_us"])] for key, s in busy.items()]
    md += "\n\n### act() while the server learns (µs)\n\n"
    md += c.table(["client", "calls", "p50", "p90", "p99", "max"], busy_rows)
    busy_remote = busy["ours: RemoteAgent.act"]["p50_us"]
    busy_local = busy["ours: RemoteAgent.act, policy='local'"]["p50_us"]
    md += (f"\n\nWhile learning: local act() p50 {c.fmt_us(busy_local)} µs, {busy_remote / busy_local:.0f}× faster "
           f"than remote act() (p50 {c.fmt_us(busy_remote)}{'' if 'ms' in c.fmt_us(busy_remote) else ' µs'}).")
    rates = {mode: statistics.median(v) for mode, v in loop_rates.items()}
    loop_rows = [[mode, f"{rate:,.0f}", f"{rate / rates['remote']:.1f}×"] for mode, rate in rates.items()]
    md += "\n\n### CartPole loop, act() + step() (iterations/s, median of blocks)\n\n"
    md += c.table(["policy=", "iterations/s", "vs remote"], loop_rows)
    for note in notes:
        md += f"\n\n{note}"
    print(md)
    checks = [{"target": "act p50 <= 1.1x bare Session.post", "ok": ok_bare, "ratio": ours / bare_p50},
              {"target": "act faster than published", "ok": ok_pub},
              {"target": "local act p50 <= 100 us", "ok": ok_local, "p50_us": local_p50},
              {"target": "local act >= 20x faster than remote", "ok": ok_ratio, "ratio": ours / local_p50}]
    stem = c.save("bench_act", {"blocks": blocks, "block_size": k, "results": summary, "checks": checks,
                                "learning_server": busy,
                                "loop_iterations_per_s": rates, "notes": notes}, md, args.quick)
    plot(lat, stem.with_suffix(".png"))
    return 0


def _bare_post(server, name: str, pool: List[tuple], *, check: bool) -> Callable[[int], None]:
    """``bare(i)``: POST /act of ``pool[i]``'s observation, pre-encoded, on one kept-alive Session,
    its body read. With ``check``, an answer other than 200 raises (a learning server may answer 503
    busy, which is part of what is measured there)."""
    import orjson
    import requests

    session = requests.Session()
    token = session.post(server.api_url + "/login/access-token",
                         data={"username": c.USER[0], "password": c.USER[1]}).json()["access_token"]
    act_url = f"{server.api_url}/agents/{name}/act"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    params = {"noise": 0.0}
    bodies = [orjson.dumps(t[0]) for t in pool]

    def bare(i: int) -> None:
        r = session.post(act_url, data=bodies[i & 1023], params=params, headers=headers)
        if check and r.status_code != 200:
            raise RuntimeError(f"bare post: {r.status_code} {r.text}")
        r.content  # noqa: B018 - read the body, as any caller must

    return bare


def _learning_server(work: Path, pool: List[tuple], blocks: int, k: int, notes: List[str]) -> Dict[str, List[int]]:
    """Latencies (ns) of remote act(), the bare post and local act() on a server that learns meanwhile."""
    from agents_bar_stream import RemoteAgent, StreamOptions
    from agents_bar_stream.server.process import LocalServer

    lat: Dict[str, List[int]] = {"ours: RemoteAgent.act": [], "bare requests.Session.post": [],
                                 "ours: RemoteAgent.act, policy='local'": []}
    args = [a for a in c.SERVER_ARGS if a != "--no-learn"]
    server = LocalServer(work / "server-learning", users=[c.USER], extra_args=args).start(timeout=120)
    stop = threading.Event()
    feeder_thread = None
    try:
        name = c.agent_name("act-learning")
        c.create_agent(server.url, name)
        client = c.our_client(server.url)
        feeder = RemoteAgent(client, name, stream=StreamOptions(queue_dir=work / "queue-feed"))
        agent = RemoteAgent(client, name, act_timeout=30, stream=StreamOptions(queue_dir=work / "queue-l1"))
        local = RemoteAgent(client, name, policy="local", stream=StreamOptions(queue_dir=work / "queue-l2"))

        def feed() -> None:
            while not stop.is_set():
                for t in pool[:200]:
                    feeder.step(*t)
                stop.wait(0.1)

        feeder_thread = threading.Thread(target=feed, name="bench-feeder", daemon=True)
        feeder_thread.start()
        bare = _bare_post(server, name, pool, check=False)
        local.refresh_policy(timeout=30)
        time.sleep(2.0)  # the learner past its warm-up and busy
        clock = time.perf_counter_ns
        for b in range(blocks):
            print(f"  learning block {b + 1}/{blocks}", file=sys.stderr, flush=True)
            for key, call in (("ours: RemoteAgent.act", lambda i: agent.act(pool[i & 1023][0])),
                              ("bare requests.Session.post", bare),
                              ("ours: RemoteAgent.act, policy='local'", lambda i: local.act(pool[i & 1023][0]))):
                out = lat[key]
                for i in range(k):
                    t0 = clock()
                    call(i)
                    out.append(clock() - t0)
        info = client.request("GET", f"/agents/{name}").json()
        notes.append(f"Learning server: {info['steps_received']:,} steps received and {info['steps_learned']:,} "
                     f"learnt by the end; the local policy was version {local.policy_version} "
                     f"({local.stats['policy_age']:.1f} s old), refreshed every 5 s.")
        for a in (feeder, agent, local):
            a.close(1)
        client.close()
    finally:
        stop.set()
        if feeder_thread is not None:
            feeder_thread.join(5)
        server.stop()
    return lat


def _ratio(r: float) -> str:
    return f"{r:.2f}×" if r >= 0.01 else f"{r:.4f}×"


def _exported_policy() -> bytes:
    """A policy exported here from an agent of the benchmark's config (for a server without the route)."""
    from agents_bar_stream.server.learner import build_agent, validate_config
    from agents_bar_stream.server.policy_export import export_policy

    config = validate_config(c.MODEL, {"obs_size": c.OBS_SIZE, "action_size": c.ACTION_SIZE})
    return export_policy(build_agent(c.MODEL, config), c.MODEL, c.OBS_SIZE, c.ACTION_SIZE).onnx_bytes


class _FakeCartPole:
    """CartPole's shapes and episode length, no physics: for a machine without gymnasium."""

    name = "fake environment (gymnasium not installed)"

    def __init__(self) -> None:
        import random

        self._rng = random.Random(0)
        self._t = 0

    def reset(self):
        self._t = 0
        return [self._rng.uniform(-0.05, 0.05) for _ in range(c.OBS_SIZE)], {}

    def step(self, action):
        self._t += 1
        obs = [self._rng.uniform(-0.5, 0.5) for _ in range(c.OBS_SIZE)]
        return obs, 1.0, self._t >= 200, False, {}


class _Gym:
    name = "gymnasium CartPole-v1"

    def __init__(self, env) -> None:
        self.env = env

    def reset(self):
        obs, info = self.env.reset(seed=0)
        return obs.tolist(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs.tolist(), float(reward), bool(terminated), bool(truncated), info


def _env():
    try:
        import gymnasium
    except ImportError:
        return _FakeCartPole()
    return _Gym(gymnasium.make("CartPole-v1"))


def _loop(env, agent, n: int) -> float:
    """Iterations per second of act() + env.step() + agent.step() over ``n`` iterations."""
    obs, _ = env.reset()
    t0 = time.perf_counter()
    for _ in range(n):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.step(obs, action, reward, next_obs, terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    return n / (time.perf_counter() - t0)


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

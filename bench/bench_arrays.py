"""Numpy observations (issue 12): step() latency, disk per step and RSS for camera frames; numpy vs lists.

In one run; 1 and 3 with the server stopped (a loopback port where nothing listens):

1. 84x84x4 uint8 frames from a real rendering: gymnasium's CartPole-v1 ``rgb_array`` render,
   converted to grey, resized to 84x84 (area average) and stacked 4 deep, as an Atari-style
   pipeline does; ``next_obs`` of a step is the next step's ``obs``. step() p50/p99 over N steps
   (default 100k; quick 10k), each timed alone; the client's RSS every 10k steps; after close()
   (everything committed) the queue directory's bytes per step, beside the raw obs + next_obs.
2. The same frames delivered to our server on loopback (the binary body it advertises): raw array
   bytes per second from the first step to flush() returning, every step received once.
3. CartPole-shaped steps (4 numbers): numpy float32 arrays vs plain lists, alternating blocks of
   5000 steps on two agents, p50 of each and their ratio.

    python bench/bench_arrays.py [--quick] [--n N]

Lists now vs before (the `main` tree) are measured by bench/bench_ab.py, not here.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

FRAME = (84, 84, 4)
RAW_OBS_PAIR = 2 * 84 * 84 * 4  # bytes of obs + next_obs
POOL = 1000  # distinct rendered transitions, cycled


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rendered_frames(n: int, seed: int = 0) -> List[Any]:
    """``n + 1`` stacked observations (84, 84, 4) uint8 from CartPole-v1's rendering under a random policy."""
    import gymnasium as gym
    import numpy as np

    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)

    def small(rgb: Any) -> Any:
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (400, 600)
        h, w = grey.shape
        ys = np.linspace(0, h, 85).astype(int)
        xs = np.linspace(0, w, 85).astype(int)
        # Area average over an 84x84 grid of blocks (reduceat sums each block's rows, then columns).
        blocks = np.add.reduceat(np.add.reduceat(grey, ys[:-1], axis=0), xs[:-1], axis=1)
        sizes = np.outer(np.diff(ys), np.diff(xs))
        return (blocks / sizes).round().clip(0, 255).astype(np.uint8)

    stack = [small(env.render())] * 4
    out = []
    for _ in range(n + 1):
        out.append(np.stack(stack, axis=-1))
        _obs, _r, term, trunc, _ = env.step(int(rng.integers(2)))
        if term or trunc:
            env.reset()
        stack = stack[1:] + [small(env.render())]
    env.close()
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bare_copies(frames: List[Any], n: int) -> Dict[str, Any]:
    """The floor of this machine, same run: the two copies step() makes at least (``tobytes`` of both)."""
    clock = time.perf_counter_ns
    lat = [0] * n
    keep: List[bytes] = []
    for i in range(n):
        k = i % POOL
        obs, nxt = frames[k], frames[k + 1]
        t0 = clock()
        a, b = obs.tobytes(), nxt.tobytes()
        lat[i] = clock() - t0
        keep.append(a)
        keep.append(b)
        if len(keep) > 1000:  # held for a while, as the group commit's buffer holds steps
            keep = []
    return c.summarize_ns(lat)


def frames_run(frames: List[Any], n: int, workdir: Path) -> Dict[str, Any]:
    from agents_bar_stream import Client, RemoteAgent, StreamOptions

    client = Client(base_url=c.dead_url(), access_token="bench")
    queue_dir = workdir / "frames-queue"
    agent = RemoteAgent(client, c.agent_name("frames"), obs_size=28224, action_size=2,
                        stream=StreamOptions(queue_dir=queue_dir, max_pending_bytes=2**40, close_timeout=0))
    agent.open_queue()
    clock = time.perf_counter_ns
    for i in range(200):
        agent.step(frames[i % POOL], i & 1, 1.0, frames[i % POOL + 1], False)
    gc.collect()
    rss = [(0, rss_bytes())]
    lat = [0] * n
    t_start = time.perf_counter()
    for i in range(n):
        k = i % POOL
        obs, nxt = frames[k], frames[k + 1]
        t0 = clock()
        agent.step(obs, i & 1, 1.0, nxt, False)
        lat[i] = clock() - t0
        if (i + 1) % 10_000 == 0:
            rss.append((i + 1, rss_bytes()))
    loop_s = time.perf_counter() - t_start
    pending_at_end = agent.stats["pending"]
    t_close = time.perf_counter()
    agent.close(timeout=0)  # the committer writes what is in memory; nothing is delivered (no server)
    close_s = time.perf_counter() - t_close
    client.close()
    steps = n + 200
    disk = dir_bytes(queue_dir)
    return {"latency": c.summarize_ns(lat), "rss": rss, "loop_s": loop_s, "close_s": close_s,
            "pending_at_end": pending_at_end, "steps_on_disk": steps, "disk_bytes": disk,
            "disk_per_step": disk / steps, "raw_per_step": RAW_OBS_PAIR, "disk_ratio": disk / steps / RAW_OBS_PAIR}


def cartpole_run(blocks: int, block: int, workdir: Path) -> Dict[str, Any]:
    import numpy as np

    from agents_bar_stream import Client, RemoteAgent, StreamOptions

    pool = c.transitions()
    pool_np = [(np.array(o, np.float32), a, r, np.array(nx, np.float32), d) for o, a, r, nx, d in pool]
    client = Client(base_url=c.dead_url(), access_token="bench")
    agents = {}
    for kind in ("lists", "numpy float32"):
        agents[kind] = RemoteAgent(client, c.agent_name("cp"), stream=StreamOptions(
            queue_dir=workdir / f"cp-{kind.split()[0]}", max_pending_bytes=2**40, close_timeout=0))
        agents[kind].open_queue()
    lat: Dict[str, List[int]] = {"lists": [], "numpy float32": []}
    clock = time.perf_counter_ns
    for b in range(blocks):
        for kind, data in (("lists", pool), ("numpy float32", pool_np)) if b % 2 == 0 else \
                (("numpy float32", pool_np), ("lists", pool)):
            step = agents[kind].step
            out = lat[kind]
            for i in range(block):
                t = data[i & 1023]
                t0 = clock()
                step(t[0], t[1], t[2], t[3], t[4])
                out.append(clock() - t0)
    for agent in agents.values():
        agent.close(timeout=0)
    client.close()
    return {kind: c.summarize_ns(v) for kind, v in lat.items()}


def delivery_run(frames: List[Any], n: int, workdir: Path) -> Dict[str, Any]:
    """Frames delivered to our server on loopback (84x84x4 uint8, the binary body the server advertises,
    zstd when smaller). Time from the first step to flush() returning; raw array bytes (obs +
    next_obs) per second of that; the server's count of received steps and its log's length checked."""
    import requests

    from agents_bar_stream import RemoteAgent, StreamOptions

    server = c.start_server(workdir / "server")
    try:
        name = c.agent_name("deliver")
        api = f"{server.url}/api/v1"
        token = requests.post(f"{api}/login/access-token", data={"username": c.USER[0], "password": c.USER[1]},
                              timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        # A replay buffer of camera frames must fit the server's byte cap (9,450 steps of these).
        created = requests.post(f"{api}/agents/", timeout=30, headers=headers, json={
            "name": name, "model": "dqn", "description": None, "is_active": True,
            "config": {"obs_size": 28_224, "obs_shape": list(FRAME), "obs_dtype": "uint8", "action_size": 2,
                       "buffer_size": 5_000}})
        created.raise_for_status()
        client = c.our_client(server.url)
        agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=workdir / "deliver-q"))
        agent.open_queue()
        t0 = time.perf_counter()
        for i in range(n):
            k = i % POOL
            agent.step(frames[k], i & 1, 1.0, frames[k + 1], False)
        delivered = agent.flush(timeout=600)
        elapsed = time.perf_counter() - t0
        stats = agent.stats
        encoding = "binary" if agent._stream_obj._flusher.binary else "json"  # private: a bench may look
        agent.close(timeout=5)
        client.close()
        received = requests.get(f"{api}/agents/{name}", headers=headers, timeout=30).json()["steps_received"]
    finally:
        server.stop()
    return {"steps": n, "delivered": delivered, "elapsed_s": elapsed, "steps_per_s": n / elapsed,
            "raw_mb_per_s": n * RAW_OBS_PAIR / elapsed / 1e6, "encoding": encoding, "received": received,
            "dead_lettered": stats.get("dead_lettered")}


def main() -> None:
    # gymnasium renders through pygame, which wants a display unless told otherwise (set before it loads).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="frame steps (default 100000; quick 10000)")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    import logging

    logging.getLogger("agents_bar_stream").setLevel(logging.ERROR)  # "steps left undelivered" at close
    t0 = time.perf_counter()
    frames = rendered_frames(POOL)
    render_s = time.perf_counter() - t0
    with c.Workdir("arrays") as workdir:
        cart = cartpole_run(6 if args.quick else 20, 5000, workdir)
        bare = bare_copies(frames, min(n, 20_000))
        fr = frames_run(frames, n, workdir)
        dl = delivery_run(frames, 2_000 if args.quick else 10_000, workdir)
    lat = fr["latency"]
    ratio = cart["numpy float32"]["p50_us"] / cart["lists"]["p50_us"]
    rss = fr["rss"]
    rows = [
        ["84x84x4 uint8 step() p50 (µs)", c.fmt_us(lat["p50_us"]), "<= 30", c.verdict(lat["p50_us"] <= 30)],
        ["84x84x4 uint8 step() p99 (µs)", c.fmt_us(lat["p99_us"]), "<= 200", c.verdict(lat["p99_us"] <= 200)],
        ["84x84x4 uint8 step() p99.9 / max (µs)", f"{c.fmt_us(lat['p99_9_us'])} / {c.fmt_us(lat['max_us'])}", "", ""],
        ["same run: bare obs.tobytes() + next_obs.tobytes() p50 / p99 (µs)",
         f"{c.fmt_us(bare['p50_us'])} / {c.fmt_us(bare['p99_us'])}", "", ""],
        ["disk per step (bytes), after close", f"{fr['disk_per_step']:,.0f} ({fr['disk_ratio']:.3f}x raw "
         f"{RAW_OBS_PAIR:,})", "<= 0.6x raw (33,869)", c.verdict(fr["disk_ratio"] <= 0.6)],
        ["client RSS (MB) at 0 / 10k / ... steps", " / ".join(f"{b / 2**20:,.0f}" for _, b in rss), "flat", ""],
        ["steps in memory or on disk when the loop ended", f"{fr['pending_at_end']:,}", "", ""],
        ["close() (commit of what was in memory), s", f"{fr['close_s']:.2f}", "", ""],
        [f"delivered to our server on loopback ({dl['encoding']} body), step() to flush(), raw MB/s",
         f"{dl['raw_mb_per_s']:.1f} ({dl['steps_per_s']:,.0f} steps/s; {dl['steps']:,} sent, {dl['received']:,} "
         f"received by the server, dead letters {dl['dead_lettered']})", ">= 100",
         c.verdict(dl["raw_mb_per_s"] >= 100 and dl["received"] == dl["steps"])],
        ["CartPole step() p50, lists (µs)", c.fmt_us(cart["lists"]["p50_us"]), "", ""],
        ["CartPole step() p50, numpy float32 (µs)", c.fmt_us(cart["numpy float32"]["p50_us"]), "", ""],
        ["numpy / lists (p50)", f"{ratio:.2f}x", "<= 1.3x", c.verdict(ratio <= 1.3)],
    ]
    md = (f"### bench_arrays: numpy observations, server stopped ({n:,} frame steps)\n\n"
          + c.table(["what", "measured", "target", ""], rows)
          + f"\n\nFrames: CartPole-v1 rgb_array renders, grey, 84x84 area average, stacked 4; {POOL} "
            f"transitions cycled (rendered in {render_s:.1f} s). Queue: durability batch, zstd level 1 segments.\n")
    print(md)
    c.save("bench_arrays", {"n": n, "delivery": dl, "bare_copies": bare, "frames": fr, "cartpole": cart,
                            "numpy_over_lists_p50": ratio, "render_s": render_s, "pid": os.getpid()}, md, args.quick)


if __name__ == "__main__":
    main()

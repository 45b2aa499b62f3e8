"""Raw array bytes per second that the server ingests from binary step bodies vs the same steps as JSON.

Camera-sized steps (issue 12): 84x84x4 uint8 frames, stacks of four grey 84x84 frames of
gymnasium's CartPole-v1 rendered as ``rgb_array`` (real frames, not noise; random-policy episodes).
Each step's ``next_obs`` is the next step's ``obs``, which the binary body stores once. The bodies
are encoded before the clock starts (the client's encoding is not what is measured here), then
posted one after the other over one kept-alive connection on loopback to the project's server
(``--no-learn``, ``--synchronous full``: each answered batch is on disk); the time runs from the
first request to the last answer. Every step is applied once: the answers' ``applied`` add up to N,
and so does the agent's ``steps_received``. Three ways, alternated per repetition, medians:

- ``binary``: ``application/x-agents-bar-steps``, uncompressed;
- ``binary+zstd``: the same bodies, zstd level 1 (``Content-Encoding: zstd``);
- ``json``: today's JSON body, each frame a flat list of 28,224 integers;
- ``binary-noise``: ``binary`` with frames of uniform random bytes instead, the worst case for the
  server's storage, which zstd-compresses the stored rows (rendered frames shrink ~100x, noise not
  at all, so this one is bound by the disk).

"Raw array bytes" are the bytes of each step's ``obs`` and ``next_obs`` as arrays (56,448 a step),
whatever travels on the wire; the wire bytes are reported beside them.

    python bench/bench_binary_ingest.py [--quick] [--n N] [--repeat R]
"""

from __future__ import annotations

import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

SHAPE = (84, 84, 4)
TARGET_MB_S = 100.0


def real_frames(n: int, seed: int = 0) -> List[Any]:
    """``n + 1`` stacked observations from CartPole's rendering, grey, 84x84, four frames deep."""
    import gymnasium as gym
    import numpy as np

    env = gym.make("CartPole-v1", render_mode="rgb_array")
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    rows = cols = None
    grey: List[Any] = []
    while len(grey) < n + 4:
        rgb = env.render()
        if rows is None:
            rows = np.linspace(0, rgb.shape[0] - 1, 84).astype(int)
            cols = np.linspace(0, rgb.shape[1] - 1, 84).astype(int)
        small = rgb[rows][:, cols].astype(np.float32)
        grey.append((small @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8))
        _, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            env.reset()
    env.close()
    return [np.ascontiguousarray(np.stack(grey[i:i + 4], axis=-1)) for i in range(n + 1)]


def binary_bodies(frames: List[Any], first_seq: int, producer: str, max_bytes: int) -> List[tuple]:
    """``(body, steps)`` pairs, each body at most ``max_bytes``; next_obs shares the next obs' bytes."""
    import orjson

    out = []
    i, n = 0, len(frames) - 1
    per_frame = frames[0].nbytes
    while i < n:
        count = max(1, min(n - i, (max_bytes - 65_536) // per_frame - 1))
        data = b"".join(f.tobytes() for f in frames[i:i + count + 1])
        steps = []
        for k in range(count):
            ref = {"dtype": "|u1", "shape": list(SHAPE), "offset": k * per_frame, "nbytes": per_frame}
            steps.append({"obs": ref, "action": [(i + k) % 2], "reward": 1.0,
                          "next_obs": {**ref, "offset": (k + 1) * per_frame}, "done": False})
        header = orjson.dumps({"producer_id": producer, "first_seq": first_seq + i, "steps": steps})
        out.append((b"ABS1" + struct.pack("<I", len(header)) + header + data, count))
        i += count
    return out


def json_bodies(frames: List[Any], first_seq: int, producer: str, max_bytes: int) -> List[tuple]:
    import orjson

    lists = [f.ravel().tolist() for f in frames]
    out = []
    i, n = 0, len(frames) - 1
    while i < n:
        steps: List[dict] = []
        size = 100
        while i + len(steps) < n:
            k = i + len(steps)
            step = {"obs": lists[k], "action": [k % 2], "reward": 1.0, "next_obs": lists[k + 1], "done": False}
            grow = len(orjson.dumps(step)) + 1
            if steps and size + grow > max_bytes:
                break
            steps.append(step)
            size += grow
        out.append((orjson.dumps({"producer_id": producer, "first_seq": first_seq + i, "steps": steps}), len(steps)))
        i += len(steps)
    return out


def run_way(url: str, token: str, way: str, frames: List[Any], max_bytes: int) -> Dict[str, Any]:
    import requests
    import zstandard

    name = c.agent_name(f"ingest-{way.replace('+', '-')}")
    kind = "binary" if way.startswith("binary") else "json"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    api = f"{url}/api/v1"
    resp = session.post(f"{api}/agents/", timeout=60, json={
        "name": name, "model": "dqn", "config": {"obs_size": 28_224, "action_size": 2, "obs_shape": list(SHAPE),
                                                 "obs_dtype": "uint8", "hidden_layers": [16], "buffer_size": 1000}})
    resp.raise_for_status()
    headers = {"Content-Type": "application/json"}
    if kind == "json":
        bodies = json_bodies(frames, 0, "p", max_bytes)
    else:
        bodies = binary_bodies(frames, 0, "p", max_bytes)
        headers = {"Content-Type": "application/x-agents-bar-steps"}
        if way == "binary+zstd":
            cctx = zstandard.ZstdCompressor(level=1)
            bodies = [(cctx.compress(b), k) for b, k in bodies]
            headers["Content-Encoding"] = "zstd"
    n = sum(k for _, k in bodies)
    wire = sum(len(b) for b, _ in bodies)
    # One warm-up request on another producer (connection open, agent cached), not counted.
    warm = binary_bodies(frames[:3], 0, "warm", max_bytes)[0][0]
    session.post(f"{api}/agents/{name}/steps", data=warm, timeout=60,
                 headers={"Content-Type": "application/x-agents-bar-steps"}).raise_for_status()
    applied = 0
    t0 = time.perf_counter()
    for body, _ in bodies:
        r = session.post(f"{api}/agents/{name}/steps", data=body, headers=headers, timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"{way}: {r.status_code} {r.text[:300]}")
        applied += r.json()["applied"]
    seconds = time.perf_counter() - t0
    received = session.get(f"{api}/agents/{name}", timeout=60).json()["steps_received"]
    session.delete(f"{api}/agents/{name}", timeout=60)
    session.close()
    if applied != n or received != n + 2:
        raise RuntimeError(f"{way}: applied {applied}, received {received}, expected {n} (+2 warm-up)")
    raw = n * 2 * frames[0].nbytes
    return {"steps": n, "requests": len(bodies), "seconds": seconds, "raw_mb_s": raw / seconds / 1e6,
            "wire_mb_s": wire / seconds / 1e6, "steps_s": n / seconds, "wire_bytes_per_step": wire / n}


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="steps per repetition (default 3000; quick 600)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.n or (600 if args.quick else 3000)
    import numpy as np

    frames = real_frames(n)
    noise = [np.random.default_rng(1).integers(0, 256, size=SHAPE, dtype=np.uint8) for _ in range(n + 1)]
    ways = ["binary", "binary+zstd", "json", "binary-noise"]
    runs: Dict[str, List[Dict[str, Any]]] = {w: [] for w in ways}
    with c.Workdir("binary-ingest") as work:
        server = c.start_server(work / "server")
        import requests

        token = requests.post(f"{server.url}/api/v1/login/access-token", timeout=30,
                              data={"username": c.USER[0], "password": c.USER[1]}).json()["access_token"]
        max_bytes = requests.get(f"{server.url}/api/v1/stream/info", timeout=30).json()["max_batch_bytes"]
        try:
            for r in range(args.repeat):
                order = ways if r % 2 == 0 else list(reversed(ways))
                for way in order:
                    source = noise if way == "binary-noise" else frames
                    runs[way].append(run_way(server.url, token, way, source, max_bytes))
                    print(f"rep {r} {way}: {runs[way][-1]['raw_mb_s']:.1f} MB/s raw", flush=True)
        finally:
            server.stop(timeout=30)
    summary = {w: {k: statistics.median(x[k] for x in runs[w]) for k in runs[w][0]} for w in ways}
    base = summary["json"]["raw_mb_s"]
    rows = []
    for w in ways:
        s = summary[w]
        target = c.verdict(s["raw_mb_s"] >= TARGET_MB_S) if w != "json" else ""
        rows.append([w, f"{s['raw_mb_s']:.1f}", f"{s['raw_mb_s'] / base:.1f}x", f"{s['wire_mb_s']:.1f}",
                     f"{s['wire_bytes_per_step'] / 1000:.1f}", f"{s['steps_s']:.0f}", int(s["requests"]),
                     f"{s['seconds']:.2f}", target])
    md = (f"84x84x4 uint8 CartPole frames (binary-noise: random bytes), {n} steps per way, median of {args.repeat}; "
          f"server `--no-learn`, synchronous full, max_batch_bytes {max_bytes}\n\n"
          + c.table(["way", "raw array MB/s", "vs json", "wire MB/s", "wire KB/step", "steps/s", "requests",
                     "seconds", f">= {TARGET_MB_S:.0f} MB/s"], rows))
    print(md)
    c.save("bench_binary_ingest", {"n": n, "repeat": args.repeat, "runs": runs, "summary": summary,
                                   "target_raw_mb_s": TARGET_MB_S}, md, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: servers, the published client's worker, statistics and output.

Nothing here asserts a speed. Machines are shared and noisy, so scripts report medians and tails
and compare things measured side by side in the same run; a target is printed as PASS or MISS
next to the number, for a person to read.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
USER = ("bench", "bench-secret-pw")
# The server runs without learners in every benchmark: on a 2-core machine a learner thread
# (torch) would compete with the client for CPU and measure the learner, not the client.
SERVER_ARGS = ["--no-learn", "--log-level", "warning"]
OBS_SIZE, ACTION_SIZE, MODEL = 4, 2, "dqn"  # CartPole's shapes


# --- the machine and the command --------------------------------------------------------------------

def machine() -> Dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (float("nan"),) * 3
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], BENCH_DIR.parent)] + sys.argv[1:])


def compat_python() -> Optional[str]:
    """The interpreter that has the published ``agents-bar==0.4.2`` alone, or None (those rows are skipped)."""
    for candidate in (os.environ.get("AGENTS_BAR_COMPAT_PYTHON"), "/tmp/compat/bin/python"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


SKIP_PUBLISHED = ("published client skipped: no interpreter with agents-bar==0.4.2 "
                  "(set AGENTS_BAR_COMPAT_PYTHON, or run `tox -e compat` first)")


# --- data ----------------------------------------------------------------------------------------

def transitions(n: int = 1024, seed: int = 0) -> List[tuple]:
    """A pool of CartPole-shaped transitions (4 floats, discrete action), plain Python values."""
    rng = random.Random(seed)
    pool = []
    for i in range(n):
        obs = [rng.uniform(-2.4, 2.4), rng.uniform(-3, 3), rng.uniform(-0.2, 0.2), rng.uniform(-3, 3)]
        nxt = [x + rng.uniform(-0.05, 0.05) for x in obs]
        pool.append((obs, rng.randrange(2), 1.0, nxt, i % 200 == 199))
    return pool


# --- statistics ------------------------------------------------------------------------------------

def summarize_ns(samples: Sequence[int]) -> Dict[str, float]:
    """Percentiles of latencies given in ns, returned in µs."""
    import numpy as np

    a = np.asarray(samples, dtype=np.float64) / 1000.0
    if a.size == 0:
        return {"n": 0}
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    return {"n": int(a.size), "mean_us": float(a.mean()), "p50_us": float(p50), "p90_us": float(p90),
            "p99_us": float(p99), "p99_9_us": float(p999), "max_us": float(a.max())}


def timer_overhead_ns(n: int = 200_000) -> int:
    """Median cost of the two perf_counter_ns calls around a measured call (subtracted nowhere, reported)."""
    import numpy as np

    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        out[i] = clock() - t0
    return int(np.median(out))


def verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def fmt_us(x: Optional[float]) -> str:
    if x is None:
        return "–"
    if x >= 10_000:
        return f"{x / 1000:,.1f} ms"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}"


def fmt_rate(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:,.0f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


# --- output ---------------------------------------------------------------------------------------

def save(name: str, payload: Dict[str, Any], markdown: str, quick: bool) -> Path:
    """Write results/<name>[-quick].json and .md; return the stem for the plot."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / (name + ("-quick" if quick else ""))
    payload = {"benchmark": name, "command": command_line(), "quick": quick, "machine": machine(), **payload}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = f"<!-- {payload['command']} | {describe_machine(payload['machine'])} -->\n"
    stem.with_suffix(".md").write_text(header + markdown + "\n")
    return stem


def describe_machine(m: Dict[str, Any]) -> str:
    return (f"nproc {m['nproc']}, {m['implementation']} {m['python']}, load average "
            f"{' '.join(str(x) for x in m['loadavg_1_5_15'])}, {m['time']}")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- servers --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


class Workdir:
    """A temporary directory removed on exit (kept with BENCH_KEEP=1)."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"agents-bar-bench-{prefix}-"))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.path, ignore_errors=True)


def start_server(data_dir: Path, port: int = 0, extra: Sequence[str] = ()):
    from agents_bar_stream.server.process import LocalServer

    server = LocalServer(data_dir, port=port, users=[USER], extra_args=[*SERVER_ARGS, *extra])
    return server.start(timeout=120)


def start_noop_server() -> subprocess.Popen:
    """bench/noop_server.py in its own process; returns it with ``.url`` set."""
    port_file = Path(tempfile.mkdtemp(prefix="agents-bar-noop-")) / "port"
    proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "noop_server.py"), "--port-file", str(port_file)],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the no-op server did not start")
        time.sleep(0.02)
    proc.url = f"http://127.0.0.1:{int(port_file.read_text())}"  # type: ignore[attr-defined]
    return proc


def stop_process(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def agent_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def our_client(url: str):
    from agents_bar_stream import Client

    return Client(base_url=url, username=USER[0], password=USER[1])


def create_agent(url: str, name: str) -> None:
    from agents_bar_stream import RemoteAgent, StreamOptions

    with our_client(url) as client:
        RemoteAgent(
            client, name, stream=StreamOptions(queue_dir=tempfile.mkdtemp(prefix="agents-bar-create-"))
        ).create_agent(obs_size=OBS_SIZE, action_size=ACTION_SIZE, agent_model=MODEL)


# --- the published client, in its own interpreter ----------------------------------------------------

class Published:
    """A long-lived worker (bench/published_worker.py) running agents-bar==0.4.2; one JSON line per command."""

    def __init__(self, python: str, url: str, agent: str) -> None:
        env = dict(os.environ, AGENTS_BAR_USER=USER[0], AGENTS_BAR_PASS=USER[1])
        self.proc = subprocess.Popen([python, str(BENCH_DIR / "published_worker.py"), "--url", url, "--agent", agent],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        hello = self._read()
        self.version = hello.get("version")

    def _read(self) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the published client's worker exited ({self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"published client: {answer['error']}")
        return answer

    def run(self, op: str, n: int) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "n": n}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc)

    def __enter__(self) -> "Published":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def base_args(description: str):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smoke run with small N (for development)")
    return parser

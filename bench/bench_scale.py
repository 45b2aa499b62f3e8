"""Ingest rate and act() p50 with 1, 2 and 3 replicas on PostgreSQL, beside one server on SQLite.

Each configuration runs in turn in the same process tree: its servers are started (``--no-learn``,
so that only ingestion and acting are measured), then

- ingest: P producer processes (each a real ``RemoteAgent``, its own queue, durability ``batch``)
  step N CartPole-shaped transitions each into ONE shared agent as fast as their loop goes and
  flush; the rate is P*N over the time from the first producer's start to the last one's flush
  returning (every step acknowledged, i.e. committed in the database). Producer k talks to
  replica k mod R directly, as a load balancer with sticky connections would send it.
- act: P processes each call ``act()`` ``--act-n`` times (replica k mod R), sequentially;
  p50/p90 of all calls, and the calls per second of all processes together.

PostgreSQL is a real one (``pgserver``: PostgreSQL 16 in a temporary directory, Unix socket,
default settings, ``synchronous_commit`` on, so a 200 means committed as with SQLite's FULL).
Everything shares this machine's cores: the numbers say what bounds each tier on 2 cores, not
what the same software does with a core per replica.

    python bench/bench_scale.py [--quick] [--producers P] [--n N] [--act-n A]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

# --- the workers (each in its own process) -----------------------------------------------------------

def _ingest_worker(url: str, agent: str, n: int, queue: str, seed: int) -> Dict[str, Any]:
    from agents_bar_stream import RemoteAgent, StreamOptions

    pool = c.transitions(seed=seed)
    client = c.our_client(url)
    remote = RemoteAgent(client, agent, stream=StreamOptions(queue_dir=queue))
    t0, cpu0 = time.time(), os.times()
    step = remote.step
    for i in range(n):
        t = pool[i & 1023]
        step(t[0], t[1], t[2], t[3], t[4])
    ok = remote.flush(600)
    t1, cpu1 = time.time(), os.times()
    stats = remote.stats
    remote.close(5)
    return {"start": t0, "end": t1, "ok": ok and stats["delivered"] == n, "retries": stats["retries"],
            "duplicates": stats["duplicates"], "cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)}


def _act_worker(url: str, agent: str, n: int) -> Dict[str, Any]:
    from agents_bar_stream import RemoteAgent, StreamOptions

    pool = c.transitions()
    client = c.our_client(url)
    remote = RemoteAgent(client, agent, stream=StreamOptions(queue_dir=tempfile.mkdtemp(prefix="abs-act-")))
    for i in range(20):  # warm-up: logged in, the agent loaded on that replica
        remote.act(pool[i][0])
    times = []
    t0 = time.time()
    for i in range(n):
        s = time.perf_counter_ns()
        remote.act(pool[i & 1023][0])
        times.append(time.perf_counter_ns() - s)
    t1 = time.time()
    remote.close(5)
    return {"start": t0, "end": t1, "ns": times}


def _worker_main(argv: List[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["ingest", "act"])
    p.add_argument("--url")
    p.add_argument("--agent")
    p.add_argument("--n", type=int)
    p.add_argument("--queue", default="")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    out = _ingest_worker(a.url, a.agent, a.n, a.queue, a.seed) if a.worker == "ingest" else \
        _act_worker(a.url, a.agent, a.n)
    print(json.dumps(out))
    return 0


def _run_workers(commands: List[List[str]], timeout: float = 900) -> List[Dict[str, Any]]:
    procs = [subprocess.Popen([sys.executable, __file__, *cmd], stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for cmd in commands]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"a worker failed ({proc.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


# --- CPU time of the parts ---------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (and of its reaped children when asked); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / _TICK


def _postgres_cpu(data_dir: Optional[str]) -> float:
    """CPU seconds of the PostgreSQL of ``data_dir``: the postmaster, its live backends and the reaped ones."""
    if data_dir is None:
        return 0.0
    try:
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = _cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                total += _cpu_seconds(int(entry.name))
    return total


class _Cpu:
    """CPU seconds the servers and PostgreSQL spent between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: List[int], pg_dir: Optional[str]) -> None:
        self.pids, self.pg_dir = pids, pg_dir

    def _now(self) -> Tuple[float, float]:
        return sum(_cpu_seconds(p) for p in self.pids), _postgres_cpu(self.pg_dir)

    def start(self) -> None:
        self.t0 = self._now()

    def stop(self) -> Tuple[float, float]:
        t1 = self._now()
        return t1[0] - self.t0[0], t1[1] - self.t0[1]


# --- one configuration -------------------------------------------------------------------------------

def _measure(urls: List[str], producers: int, n: int, act_n: int, work: Path, cpu: _Cpu) -> Dict[str, Any]:
    agent = c.agent_name("scale")
    c.create_agent(urls[0], agent)
    cpu.start()
    ingest = _run_workers([["--worker", "ingest", "--url", urls[k % len(urls)], "--agent", agent, "--n", str(n),
                            "--queue", str(work / f"q-{agent}-{k}"), "--seed", str(k)] for k in range(producers)])
    if not all(r["ok"] for r in ingest):
        raise RuntimeError("a producer's steps were not all delivered")
    span = max(r["end"] for r in ingest) - min(r["start"] for r in ingest)
    ingest_server_cpu, ingest_pg_cpu = cpu.stop()
    for url in urls:  # the agent loaded on every replica (torch: a second of CPU) before act is measured
        _act_worker(url, agent, 1)
    cpu.start()
    acts = _run_workers([["--worker", "act", "--url", urls[k % len(urls)], "--agent", agent, "--n", str(act_n)]
                         for k in range(producers)])
    act_server_cpu, act_pg_cpu = cpu.stop()
    ns = sorted(t for r in acts for t in r["ns"])
    steps = producers * n
    act_span = max(r["end"] for r in acts) - min(r["start"] for r in acts)
    return {
        "ingest_rate": producers * n / span, "ingest_seconds": span,
        "retries": sum(r["retries"] for r in ingest), "duplicates": sum(r["duplicates"] for r in ingest),
        "act_p50_ms": ns[len(ns) // 2] / 1e6, "act_p90_ms": ns[int(len(ns) * 0.9)] / 1e6,
        "act_rate": len(ns) / act_span,
        # CPU per unit of work, the figures that carry to other machines: ms of CPU per 1000 steps
        # ingested, per act() call, in the server processes and in PostgreSQL.
        "server_cpu_ms_per_1k_steps": 1e6 * ingest_server_cpu / steps,
        "client_cpu_ms_per_1k_steps": 1e6 * sum(r.get("cpu", 0.0) for r in ingest) / steps,
        "pg_cpu_ms_per_1k_steps": 1e6 * ingest_pg_cpu / steps,
        "server_cpu_ms_per_act": 1e3 * act_server_cpu / len(ns),
        "pg_cpu_ms_per_act": 1e3 * act_pg_cpu / len(ns),
    }


def _start_replicas(count: int, store: str, work: Path) -> List[Any]:
    from agents_bar_stream.server.process import LocalServer

    servers = [LocalServer(work / f"replica-{count}-{i}", users=[c.USER],
                           extra_args=[*c.SERVER_ARGS, "--store", store, "--replica-id", f"r{i}"])
               for i in range(count)]
    for s in servers:
        s.start(timeout=120)
    return servers


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=4, help="producer (and act) processes (default 4)")
    parser.add_argument("--n", type=int, help="steps per producer (default 25000; quick 5000)")
    parser.add_argument("--act-n", type=int, help="act() calls per process (default 300; quick 100)")
    args = parser.parse_args()
    n = args.n or (5_000 if args.quick else 25_000)
    act_n = args.act_n or (100 if args.quick else 300)
    import pgserver

    results: Dict[str, Dict[str, Any]] = {}
    with c.Workdir("scale") as work:
        pg_root = tempfile.mkdtemp(prefix="abs-pg-")
        pg = pgserver.get_server(pg_root, cleanup_mode="stop")
        try:
            configs = [("SQLite, 1 server", 1, None), ("PostgreSQL, 1 replica", 1, "pg"),
                       ("PostgreSQL, 2 replicas", 2, "pg"), ("PostgreSQL, 3 replicas", 3, "pg")]
            for label, count, kind in configs:
                pg_dir = None
                if kind is None:
                    servers = [c.start_server(work / "sqlite")]
                else:
                    import psycopg

                    db = f"scale{count}"
                    with psycopg.connect(pg.get_uri(), autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE {db}")
                    uri = pg.get_uri().replace("/postgres?", f"/{db}?")
                    servers = _start_replicas(count, uri, work)
                    pg_dir = pg_root
                cpu = _Cpu([s.process.pid for s in servers], pg_dir)
                try:
                    results[label] = _measure([s.url for s in servers], args.producers, n, act_n, work, cpu)
                finally:
                    for s in servers:
                        s.stop(timeout=30)
                print(label, json.dumps(results[label]), flush=True)
        finally:
            pg.cleanup()
    rows = [(label, f"{r['ingest_rate']:,.0f}", f"{r['client_cpu_ms_per_1k_steps']:.1f}",
             f"{r['server_cpu_ms_per_1k_steps']:.1f}",
             f"{r['pg_cpu_ms_per_1k_steps']:.1f}", f"{r['act_p50_ms']:.2f}", f"{r['act_p90_ms']:.2f}",
             f"{r['act_rate']:,.0f}", f"{r['server_cpu_ms_per_act']:.2f}", f"{r['pg_cpu_ms_per_act']:.2f}")
            for label, r in results.items()]
    markdown = (f"{args.producers} producers x {n:,} steps into one agent; {args.producers} x {act_n} act() calls\n\n"
                + c.table(["configuration", "ingest steps/s", "producers' CPU ms/1k steps", "server CPU ms/1k steps",
                           "PostgreSQL CPU ms/1k steps",
                           "act p50 ms", "act p90 ms", "act calls/s", "server CPU ms/act", "PostgreSQL CPU ms/act"],
                          rows))
    print(markdown)
    c.save("bench_scale", {"producers": args.producers, "n": n, "act_n": act_n, "results": results}, markdown,
           args.quick)
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        sys.exit(_worker_main(sys.argv[1:]))
    sys.exit(main())

"""Replay after an outage: N transitions queued while the server is stopped, then the server started.

The client runs in a child process (this script with ``--child``) so that its memory can be read
from /proc/<pid>/status (VmRSS sampled every 20 ms; VmHWM, the kernel's high-water mark). The
child takes N steps against a loopback port where nothing listens and waits until they are all
committed to disk; the parent then starts the project's server (``--no-learn``) on that port and
creates the agent; the child calls ``flush()`` and reports the time until every step is
acknowledged. flush() cuts the flusher's retry backoff short, so the drain time does not include
a backoff sleep left over from the outage.

    python bench/bench_replay.py [--quick] [--n N]
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

from agents_bar_stream.config import DEFAULT_BATCH_SIZE  # noqa: E402


def read_status(pid: "int | str") -> Optional[Dict[str, int]]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def rss_now() -> int:
    return (read_status("self") or {}).get("VmRSS", 0)


def child(url: str, name: str, queue_dir: str, n: int) -> int:
    logging.getLogger("agents_bar_stream").setLevel(logging.CRITICAL)
    from agents_bar_stream import RemoteAgent, StreamOptions

    def say(**kw: Any) -> None:
        print(json.dumps(kw), flush=True)

    pool = c.transitions()
    client = c.our_client(url)
    agent = RemoteAgent(client, name, stream=StreamOptions(queue_dir=queue_dir))
    agent.open_queue()
    say(phase="ready", rss=rss_now())
    step = agent.step
    t0 = time.perf_counter()
    for i in range(n):
        t = pool[i & 1023]
        step(t[0], t[1], t[2], t[3], t[4])
    t1 = time.perf_counter()
    # Wait for the group commit to put the last steps on disk (bench-only peek at the queue).
    queue = agent._stream_obj.queue
    while queue.committed_pending() < n:
        time.sleep(0.01)
    say(phase="queued", step_seconds=t1 - t0, committed_seconds=time.perf_counter() - t0, rss=rss_now())
    sys.stdin.readline()  # the parent has started the server and created the agent
    t2 = time.perf_counter()
    ok = agent.flush(1800)
    t3 = time.perf_counter()
    stats = agent.stats
    say(phase="drained", ok=ok, drain_seconds=t3 - t2, delivered=stats["delivered"], retries=stats["retries"],
        rss=rss_now())
    agent.close(5)
    return 0


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="steps queued during the outage (default 1000000; quick 100000)")
    parser.add_argument("--child", action="store_true", help=argparse_hidden())
    parser.add_argument("--url")
    parser.add_argument("--agent")
    parser.add_argument("--queue-dir")
    args = parser.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    if args.child:
        return child(args.url, args.agent, args.queue_dir, n)

    samples: List[tuple] = []  # (seconds since start, VmRSS, VmHWM)
    marks: Dict[str, float] = {}
    messages: Dict[str, Dict[str, Any]] = {}
    with c.Workdir("replay") as work:
        port = c.free_port()
        url = f"http://127.0.0.1:{port}"
        name = c.agent_name("replay")
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", "--n", str(n), "--url", url, "--agent", name,
             "--queue-dir", str(work / "queue")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        start = time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                s = read_status(proc.pid)
                if s is None:
                    return
                samples.append((time.monotonic() - start, s.get("VmRSS", 0), s.get("VmHWM", 0)))
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        server = None
        try:
            assert proc.stdin is not None and proc.stdout is not None
            for phase in ("ready", "queued"):
                msg = json.loads(proc.stdout.readline())
                assert msg["phase"] == phase, msg
                messages[phase] = msg
                marks[phase] = time.monotonic() - start
                print(f"  child {phase} (rss {msg['rss'] / 2**20:.0f} MiB)", file=sys.stderr, flush=True)
            server = c.start_server(work / "server", port=port)
            c.create_agent(server.url, name)
            marks["go"] = time.monotonic() - start
            print("  server up; draining ...", file=sys.stderr, flush=True)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            msg = json.loads(proc.stdout.readline())
            marks["drained"] = time.monotonic() - start
            messages["drained"] = msg
            proc.wait(60)
        finally:
            stop.set()
            sampler.join(2)
            c.stop_process(proc)
            if server is not None:
                server.stop()

    drained = messages["drained"]
    if not drained["ok"]:
        raise RuntimeError(f"the queue was not drained: {drained}")
    rate = n / drained["drain_seconds"]
    before = max((s[1] for s in samples if s[0] <= marks["go"]), default=0)
    at_go = [s[1] for s in samples if s[0] <= marks["go"]][-1]
    during = [s[1] for s in samples if marks["go"] <= s[0] <= marks["drained"]] or [at_go]
    peak_drain = max(during)
    growth = peak_drain - at_go
    hwm = max(s[2] for s in samples)
    result = {
        "n": n, "drain_seconds": drained["drain_seconds"], "rate": rate, "delivered": drained["delivered"],
        "retries_during_outage": drained["retries"], "queue_step_seconds": messages["queued"]["step_seconds"],
        "rss_ready": messages["ready"]["rss"], "rss_after_queueing": at_go, "rss_peak_before_drain": before,
        "rss_peak_during_drain": peak_drain, "rss_growth_during_drain": growth, "vmhwm_end": hwm,
        "rss_after_drain": messages["drained"]["rss"],
    }
    ok_rate, ok_rss = rate >= 100_000, growth < 100 * 2**20
    mib = 2**20
    rows = [
        ["steps queued during the outage", f"{n:,}", ""],
        ["step() loop while stopped", f"{messages['queued']['step_seconds']:.1f} s "
         f"({n / messages['queued']['step_seconds']:,.0f}/s)", ""],
        ["drain time (flush() after the server is up)", f"{drained['drain_seconds']:.1f} s", ""],
        ["replayed transitions/s", c.fmt_rate(rate), f"≥ 100k/s {c.verdict(ok_rate)}"],
        ["client RSS: ready / after queueing", f"{result['rss_ready'] / mib:.0f} / {at_go / mib:.0f} MiB", ""],
        ["client RSS: peak during drain (VmRSS)", f"{peak_drain / mib:.0f} MiB", ""],
        ["client RSS growth during drain", f"{growth / mib:.1f} MiB", f"< 100 MB {c.verdict(ok_rss)}"],
        ["client VmHWM (lifetime peak)", f"{hwm / mib:.0f} MiB", ""],
    ]
    md = "### Replay after an outage\n\n" + c.table(["", "value", "target"], rows)
    md += f"\n\nServer: `--no-learn`, default `--synchronous full`; client defaults (batch_size={DEFAULT_BATCH_SIZE})."
    print(md)
    checks = [{"target": "replay >= 100k/s", "ok": ok_rate}, {"target": "RSS growth < 100 MB", "ok": ok_rss}]
    stem = c.save("bench_replay", {"result": result, "marks": marks, "checks": checks}, md, args.quick)
    plot(samples, marks, stem.with_suffix(".png"))
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def plot(samples: List[tuple], marks: Dict[str, float], path: Path) -> None:
    plt = c.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot([s[0] for s in samples], [s[1] / 2**20 for s in samples], label="VmRSS")
    ax.plot([s[0] for s in samples], [s[2] / 2**20 for s in samples], label="VmHWM", linestyle="--")
    ax.axvspan(marks.get("ready", 0), marks.get("queued", 0), color="tab:orange", alpha=0.15, label="queueing")
    ax.axvspan(marks.get("go", 0), marks.get("drained", 0), color="tab:green", alpha=0.15, label="drain")
    ax.set_xlabel("seconds")
    ax.set_ylabel("client process memory (MiB)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

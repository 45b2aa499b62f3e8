"""Run every benchmark, one after the other, and gather their tables in results/summary[-quick].md.

    python bench/run_all.py [--quick] [--only step,act]

Each script runs in its own process with this interpreter; a failing script is reported and the
others still run (the exit status is then 1).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

SCRIPTS = ["bench_step", "bench_throughput", "bench_replay", "bench_act", "bench_growth", "bench_arrays", "bench_drain",
           "bench_vector"]


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated subset, e.g. step,act")
    args = parser.parse_args()
    scripts = SCRIPTS
    if args.only:
        wanted = {f"bench_{w.strip().removeprefix('bench_')}" for w in args.only.split(",")}
        scripts = [s for s in SCRIPTS if s in wanted]
    start_machine = c.machine()
    sections = []
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(c.BENCH_DIR / f"{script}.py")] + (["--quick"] if args.quick else [])
        print(f"== {script}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            failed.append(script)
            sections.append(f"### {script}\n\nFAILED (exit status {proc.returncode}); see its output above.")
        else:
            sections.append(proc.stdout.strip() + f"\n\n_({script}: {took:.0f} s)_")
        print(proc.stdout, flush=True)
    end_machine = c.machine()
    header = (f"Command: `{c.command_line()}`  \nMachine: {c.describe_machine(start_machine)} at the start; "
              f"load average {' '.join(str(x) for x in end_machine['loadavg_1_5_15'])} at the end.")
    text = header + "\n\n" + "\n\n".join(sections) + "\n"
    c.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = c.RESULTS_DIR / ("summary-quick.md" if args.quick else "summary.md")
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

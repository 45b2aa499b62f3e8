"""Policy export and local acting (issue 11): export time per model, and LocalPolicy.act latency.

Export: each model at three sizes (CartPole-like with ai-traineree's default layers, a mid-size
network, a Humanoid-sized one), median of R exports; "copy" is the part that holds the agent's
lock (deep copies of the policy's modules), "total" adds the TorchScript trace, ONNX
serialisation and the version hash, which run without it. Acting: ``LocalPolicy.act`` on one
observation (greedy and with noise), ``act_batch`` of 64, and the bare ``InferenceSession.run`` of
the same graph for reference, each timed call by call with ``time.perf_counter_ns``.

    python bench/bench_policy.py [--quick] [--calls N]
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

ACT_TARGET_P50_US = 100.0
# (label, obs_size, action_size, hyperparameters)
SIZES = [
    ("small", 4, 2, {}),  # each model's default hidden layers
    ("mid", 64, 8, {"hidden_layers": [256, 256]}),
    ("humanoid", 376, 17, {"hidden_layers": [256, 256]}),
]
MODELS = ["dqn", "rainbow", "ddpg", "ppo"]


def make_agent(model: str, obs_size: int, action_size: int, **hyper):
    """An agent as the server builds it (ai-traineree's defaults where ``hyper`` says nothing)."""
    from agents_bar_stream.server.learner import build_agent, validate_config

    if model != "ppo":
        hyper.setdefault("buffer_size", 10_000)  # it is only allocated as it fills; the check wants it small
    return build_agent(model, validate_config(model, {"obs_size": obs_size, "action_size": action_size, **hyper}))


def _export_rows(repeats: int) -> list[dict]:
    from agents_bar_stream.server.policy_export import export_policy

    rows = []
    for label, obs_size, action_size, hyper in SIZES:
        for model in MODELS:
            extra = dict(hyper)
            if model == "ppo":
                extra.update(rollout_length=64, batch_size=32)
            agent = make_agent(model, obs_size, action_size, **extra)
            params = sum(p.numel() for p in (agent.net if model in ("dqn", "rainbow") else agent.actor).parameters())
            runs = [export_policy(agent, model, obs_size, action_size) for _ in range(repeats)]
            rows.append({"size": label, "model": model, "obs_size": obs_size, "action_size": action_size,
                         "policy_parameters": params, "onnx_bytes": len(runs[-1].onnx_bytes),
                         "copy_ms": statistics.median(r.copy_seconds for r in runs) * 1e3,
                         "total_ms": statistics.median(r.export_seconds for r in runs) * 1e3})
    return rows


def _time(fn, calls: int) -> dict:
    clock = time.perf_counter_ns
    for _ in range(min(calls, 1000)):  # warm up
        fn()
    out = [0] * calls
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return c.summarize_ns(out)


def _act_rows(calls: int) -> list[dict]:
    import numpy as np

    from agents_bar_stream.policy import LocalPolicy
    from agents_bar_stream.server.policy_export import export_policy

    rows = []
    cases = [
        ("dqn", 4, 2, [64, 64]),
        ("rainbow", 4, 2, [100, 100]),
        ("ddpg", 8, 2, [64, 64]),
        ("ppo", 8, 2, [128, 128]),
    ]
    obs_batch = np.random.default_rng(0).uniform(-1, 1, size=(64, 8)).astype(np.float32)
    for model, obs_size, action_size, layers in cases:
        agent = make_agent(model, obs_size, action_size, hidden_layers=layers)
        policy = LocalPolicy.from_bytes(export_policy(agent, model, obs_size, action_size).onnx_bytes)
        obs_list = [0.01, -0.02, 0.03, 0.04, 0.1, 0.2, -0.1, 0.0][:obs_size]
        obs_np = np.asarray(obs_list, dtype=np.float32)
        batch = obs_batch[:, :obs_size].copy()
        x = obs_np[None].copy()
        session = policy._session
        variants = [  # partials, not lambdas: each binds this model's policy and inputs
            ("act(list)", partial(policy.act, obs_list)),
            ("act(ndarray)", partial(policy.act, obs_np)),
            ("act(list, noise=0.1)", partial(policy.act, obs_list, noise=0.1)),
            ("act_batch(64)", partial(policy.act_batch, batch)),
            ("session.run (reference)", partial(session.run, None, {"obs": x})),
        ]
        for name, fn in variants:
            n = calls // 10 if "batch" in name else calls
            rows.append({"model": model, "layers": layers, "call": name, **_time(fn, n)})
    return rows


def main() -> int:
    parser = c.base_args(__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, help="timed calls per variant (default 20000; quick 2000)")
    args = parser.parse_args()
    calls = args.calls or (2000 if args.quick else 20000)
    repeats = 2 if args.quick else 5

    export_rows = _export_rows(repeats)
    act_rows = _act_rows(calls)
    dqn = next(r for r in act_rows if r["model"] == "dqn" and r["call"] == "act(list)")
    ok = dqn["p50_us"] <= ACT_TARGET_P50_US

    md = [
        "# Policy export and LocalPolicy.act (issue 11)",
        "",
        "## Export (median of %d; copy holds the agent's lock, total does not)" % repeats,
        "",
        c.table(
            ["size", "model", "obs→act", "policy weights", "ONNX bytes", "copy ms", "total ms"],
            [
                (
                    r["size"],
                    r["model"],
                    f"{r['obs_size']}→{r['action_size']}",
                    f"{r['policy_parameters']:,}",
                    f"{r['onnx_bytes']:,}",
                    f"{r['copy_ms']:.2f}",
                    f"{r['total_ms']:.1f}",
                )
                for r in export_rows
            ],
        ),
        "",
        f"## LocalPolicy.act ({calls} calls; µs)",
        "",
        c.table(
            ["model", "layers", "call", "p50", "p90", "p99", "max"],
            [
                (
                    r["model"],
                    r["layers"],
                    r["call"],
                    c.fmt_us(r["p50_us"]),
                    c.fmt_us(r["p90_us"]),
                    c.fmt_us(r["p99_us"]),
                    c.fmt_us(r["max_us"]),
                )
                for r in act_rows
            ],
        ),
        "",
        f"DQN 4→2 (64, 64) act p50 {c.fmt_us(dqn['p50_us'])} µs, target ≤ {ACT_TARGET_P50_US:.0f}: {c.verdict(ok)}",
    ]
    markdown = "\n".join(md)
    c.save(
        "bench_policy",
        {"export": export_rows, "act": act_rows, "act_target_p50_us": ACT_TARGET_P50_US},
        markdown,
        args.quick,
    )
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

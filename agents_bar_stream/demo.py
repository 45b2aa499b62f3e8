"""``agents-bar-stream demo``: a DQN agent learns CartPole through the streaming client.

The loop is what a user writes: ``act()`` for every action (epsilon-greedy noise that decays per
episode) and ``step()`` for every transition. ``step()`` only queues on disk; the server learns
from its log in a background thread at its own pace. With ``--flaky`` a :class:`FlakyProxy` sits
between the client and the server (resets, lost answers, stalls, and one 10 s outage), and the
demo shows that the loop kept its pace, the queue filled and drained, and the server received
every transition exactly once.

Imports of gymnasium, numpy and matplotlib happen inside :func:`run_demo`, so importing this
module stays cheap (the command line imports it only for ``demo``).
"""

from __future__ import annotations

import logging
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agents_bar_stream.progress import Progress, format_duration, progress

if TYPE_CHECKING:
    from agents_bar_stream.client import Client, RemoteAgent

__all__ = ["DEMO_HYPERPARAMETERS", "DemoResult", "run_demo"]

logger = logging.getLogger(__name__)

ENV_ID = "CartPole-v1"
SOLVED_AVERAGE = 195.0  # the classic CartPole threshold, over the last WINDOW episodes
WINDOW = 20
#: DQN settings that learn CartPole in one to two hundred episodes on a small CPU: a 64x64
#: dueling network, a short warm-up, 3-step returns, and a slowly following target network.
DEMO_HYPERPARAMETERS: dict[str, Any] = {
    "hidden_layers": [64, 64],
    "lr": 1e-3,
    "gamma": 0.99,
    "tau": 0.005,
    "batch_size": 64,
    "buffer_size": 50_000,
    "warm_up": 500,
    "update_freq": 2,  # learn every other step: half the CPU for about the same number of episodes
    "number_updates": 1,
    "n_steps": 3,
    "using_double_q": True,
    "max_grad_norm": 10.0,
}
EPS_START, EPS_END, EPS_DECAY = 1.0, 0.01, 0.98  # epsilon of episode k: max(END, START * DECAY**k)
# Acting on a network that is far behind the data wastes episodes (early CartPole episodes are
# 10-20 steps, so a lag of 1000 steps is 50 episodes of a stale policy while epsilon decays):
# the loop waits whenever the server's learner is more than MAX_LEARN_LAG steps behind.
MAX_LEARN_LAG = 50
INFO_EVERY = 25  # env steps between looks at the server's counters
ACT_TIMEOUT = 0.25  # seconds; over the flaky link act() falls back to a random action after this
# After a fallback the loop acts locally for a while instead of paying act_timeout on every step:
# 0.1 s after the first, doubling with each fallback in a row up to 2 s. A passing stall of the
# link then costs a few dozen random steps, not whole good episodes; an outage, a probe now and then.
OFFLINE_HOLD_MIN, OFFLINE_HOLD_MAX = 0.1, 2.0
OUTAGE_SECONDS = 10.0
POLICY_REFRESH = 1.0  # seconds between the client's conditional GETs of the agent's policy
# The environment's control period: a real system steps at its own rate whatever the network does.
# Without it a loop acting locally (the link down) would race through a simulated CartPole at
# thousands of steps a second, which shows nothing about keeping pace.
STEP_PERIOD = 0.003


class DemoError(Exception):
    """The demo could not run (missing extra, server did not start); the message says why."""


@dataclass
class DemoResult:
    """What a run did; ``ok`` is True when the server's counts match the client's."""

    returns: list[float] = field(default_factory=list)
    solved_at: int | None = None  # 1-based episode at which the 20-episode average reached 195
    wall_time: float = 0.0
    env_steps: int = 0
    enqueued: int = 0
    delivered: int = 0
    steps_received: int = 0
    steps_learned: int = 0
    log_entries: int | None = None
    log_duplicates: int | None = None
    flushed: bool = False
    step_p50_ms: float = 0.0
    step_p99_ms: float = 0.0
    step_max_ms: float = 0.0
    act_p99_ms: float = 0.0
    act_max_ms: float = 0.0
    act_fallbacks: int = 0
    local_actions: int = 0
    policy: str = "auto"  # RemoteAgent's policy mode: where act() ran
    act_remote: int = 0  # act() answers from the server
    act_local: int = 0  # act() answers from the agent's policy run here (ONNX Runtime)
    policy_version: str | None = None  # the local policy's version at the end
    policy_lag: dict[str, Any] | None = None  # the server's GET /agents/{name} policy_lag at the end
    peak_pending: int = 0
    throttle_seconds: float = 0.0
    outage: tuple[int, int] | None = None  # episodes during which the link was down
    proxy_stats: dict[str, int] = field(default_factory=dict)
    plot: str | None = None

    @property
    def ok(self) -> bool:
        counts = self.flushed and self.steps_received == self.enqueued == self.delivered
        return counts and (self.log_duplicates in (None, 0)) and (self.log_entries in (None, self.enqueued))


def _import_extras(plot: bool) -> Any:
    """gymnasium, after checking that everything the demo needs is installed (before any work starts)."""
    try:
        import gymnasium

        if plot:
            import matplotlib  # noqa: F401
    except ImportError as exc:
        raise DemoError(f"the demo needs the 'server' extra (pip install 'agents-bar-stream[server]'): {exc}") from None
    return gymnasium


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _read_log(admin: Any, name: str) -> list[tuple[str, int]]:
    """Every ``(producer_id, seq)`` in the server's log of ``name``, following ``next``."""
    out: list[tuple[str, int]] = []
    start: int | None = 0
    while start is not None:
        response = admin.request("GET", f"/agents/{name}/steps", params={"start": start, "limit": 10_000})
        doc = response.raise_for_status().json()
        out.extend((entry["producer_id"], entry["seq"]) for entry in doc["steps"])
        start = doc["next"]
    return out


def save_plot(returns: list[float], path: str, *, outage: tuple[int, int] | None = None, title: str = "") -> None:
    """A PNG of the episode returns and their moving average (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = list(range(1, len(returns) + 1))
    window: deque = deque(maxlen=WINDOW)
    average = []
    for value in returns:
        window.append(value)
        average.append(sum(window) / len(window))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        ax.plot(episodes, returns, color="#9ecae1", linewidth=1, label="episode return")
        ax.plot(episodes, average, color="#08519c", linewidth=2, label=f"average of the last {WINDOW}")
        ax.axhline(SOLVED_AVERAGE, color="#31a354", linestyle="--", linewidth=1, label=f"solved ({SOLVED_AVERAGE:g})")
        if outage is not None:
            ax.axvspan(outage[0], max(outage[1], outage[0] + 0.5), color="#fdae6b", alpha=0.4, label="link down")
        ax.set_xlabel("episode")
        ax.set_ylabel("return")
        ax.set_title(title or f"DQN on {ENV_ID} through agents-bar-stream")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


class _Pacer:
    """Keeps the loop from running far ahead of the server's learner (it learns at its own pace)."""

    def __init__(self, admin: Any, name: str) -> None:
        self.admin = admin
        self.name = name
        self.received = 0
        self.learned = 0
        self.waited = 0.0
        self.policy_lag: dict[str, Any] | None = None

    def refresh(self) -> None:
        try:
            info = self.admin.request("GET", f"/agents/{self.name}").raise_for_status().json()
        except Exception as exc:  # noqa: BLE001 - a missed look only delays pacing; the run goes on
            logger.debug("could not read the agent's counters: %s", exc)
            return
        self.received = int(info.get("steps_received", 0))
        self.learned = int(info.get("steps_learned", 0))
        lag = info.get("policy_lag")
        self.policy_lag = lag if isinstance(lag, dict) else None

    def wait_for_learner(self, max_wait: float = 30.0) -> None:
        self.refresh()
        if self.received - self.learned <= MAX_LEARN_LAG:
            return
        start = time.monotonic()
        while self.received - self.learned > MAX_LEARN_LAG // 4 and time.monotonic() - start < max_wait:
            time.sleep(0.05)
            self.refresh()
        self.waited += time.monotonic() - start


def run_demo(*, url: str | None = None, username: str | None = None, password: str | None = None,
             token: str | None = None, episodes: int = 400, flaky: bool = False, seed: int = 0,
             plot: str | None = "demo-learning-curve.png", quiet: bool = False, policy: str = "auto",
             out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> DemoResult:
    """Run the demo and return what happened; prints a summary to ``out`` and progress to ``err``.

    ``policy`` is the RemoteAgent's policy mode: ``"auto"`` (the server acts; the agent's exported
    policy acts here when the server does not answer in time, so an outage is not random play),
    ``"remote"`` (the server only; random actions when it does not answer) or ``"local"``.

    Raises :class:`DemoError` when it cannot run, and the client's own errors (AgentsBarError) when
    the server refuses something (bad credentials, for instance).
    """
    if policy not in ("auto", "remote", "local"):
        raise DemoError(f"policy must be auto, remote or local, got {policy!r}")
    gym = _import_extras(bool(plot))
    workdir = Path(tempfile.mkdtemp(prefix="agents-bar-demo-"))
    keep_workdir = False
    started = time.monotonic()
    try:
        with ExitStack() as cleanup:
            if url is None:
                url, username, password = _start_local_server(cleanup, workdir, quiet=quiet, err=err)
                token = None
            admin, link, proxy = _open_links(cleanup, url, username, password, token, flaky=flaky, seed=seed)
            rng = random.Random(seed)
            agent = _make_agent(cleanup, admin, link, workdir, seed=seed, rng=rng, policy=policy)
            if not quiet:
                where = admin.base_url if proxy is None else f"{admin.base_url} through a flaky proxy at {proxy.url}"
                print(f"agent {agent.agent_name} (dqn, policy {policy}) on {where}; {ENV_ID}, up to {episodes} "
                      f"episodes, seed {seed}", file=err, flush=True)

            result = _loop(gym, agent, admin, proxy, episodes=episodes, seed=seed, rng=rng, quiet=quiet, err=err)
            result.policy = policy
            _count_deliveries(result, agent, admin, proxy)
            result.wall_time = time.monotonic() - started
            if plot:
                save_plot(result.returns, plot, outage=result.outage)
                result.plot = str(plot)
            # What the server never acknowledged stays on disk, for `queue replay`.
            keep_workdir = not result.flushed
            _print_summary(result, out=out, flaky=flaky, workdir=workdir if keep_workdir else None)
            return result
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


# --- setting up -----------------------------------------------------------------------------------


def _start_local_server(cleanup: ExitStack, workdir: Path, *, quiet: bool, err: TextIO) -> tuple[str, str, str]:
    """Start a LocalServer in ``workdir/server`` with one demo account; returns its URL, user name and password."""
    from agents_bar_stream.server.process import LocalServer, ServerStartError

    username, password = "demo", secrets.token_urlsafe(16)
    server = LocalServer(workdir / "server", users=[(username, password)])
    cleanup.callback(server.stop)  # also after a failed start: it may have left a process behind
    if not quiet:
        print(f"starting a local server (data in {workdir / 'server'}) ...", file=err, flush=True)
    try:
        server.start(timeout=120)
    except ServerStartError as exc:
        raise DemoError(f"the local server did not start: {str(exc).splitlines()[0]}") from None
    return server.url, username, password


def _open_links(cleanup: ExitStack, url: str, username: str | None, password: str | None, token: str | None, *,
                flaky: bool, seed: int) -> tuple[Client, Client, Any]:
    """``(admin, link, proxy)``: a direct client, the one the agent uses, and the flaky proxy between (or None)."""
    from agents_bar_stream.client import Client

    admin = cleanup.enter_context(Client(base_url=url, username=username, password=password, access_token=token))
    link_url = admin.base_url
    proxy = None
    if flaky:
        from agents_bar_stream.flaky import FlakyProxy

        proxy = FlakyProxy(admin.base_url, seed=seed, reset_prob=0.1, drop_response_prob=0.03,
                           stall_prob=0.02, stall_seconds=1.5).start()
        cleanup.callback(proxy.stop)
        link_url = proxy.url
    link = cleanup.enter_context(Client(base_url=link_url, username=username, password=password, access_token=token))
    return admin, link, proxy


def _make_agent(cleanup: ExitStack, admin: Client, link: Client, workdir: Path, *, seed: int,
                rng: random.Random, policy: str) -> RemoteAgent:
    """A new DQN agent on the server, and the RemoteAgent that streams to it over ``link``, its queue open."""
    import orjson

    from agents_bar_stream.client import RemoteAgent
    from agents_bar_stream.config import RetryPolicy, StreamOptions

    name = f"demo-cartpole-{secrets.token_hex(3)}"
    hyper = dict(DEMO_HYPERPARAMETERS, seed=seed)
    # Created over the direct link: a create whose answer the proxy drops would be retried into a 409.
    payload = {"name": name, "model": "dqn", "description": "agents-bar-stream demo",
               "config": {**hyper, "obs_size": 4, "action_size": 2}, "is_active": True}
    admin.request("POST", "/agents/", body=orjson.dumps(payload)).raise_for_status()
    agent = RemoteAgent(
        link, name, agent_model="dqn", obs_size=4, action_size=2,
        act_timeout=ACT_TIMEOUT, fallback=lambda obs: rng.randrange(2),
        # CartPole's policy changes every few episodes early on: a model at most POLICY_REFRESH old
        # is what acts here when the link is down (the default 5 s would be a few episodes behind).
        policy=policy, policy_refresh=POLICY_REFRESH,
        # The demo wants the queue to drain soon after the outage, not after a 30 s backoff.
        stream=StreamOptions(queue_dir=str(workdir / "queue"), retry_policy=RetryPolicy(initial=0.05, max_delay=1.0)),
    )
    cleanup.callback(agent.close, timeout=2)
    # Open the queue (a SQLite database, two threads) before the loop, so that the first step()
    # costs what every other one does.
    agent.open_queue()
    return agent


# --- the loop -------------------------------------------------------------------------------------


class _LocalActing:
    """When act() has just fallen back to a random action, the loop acts locally for a while.

    The hold is OFFLINE_HOLD_MIN after the first fallback and doubles with each one in a row, up to
    OFFLINE_HOLD_MAX (see there why).
    """

    def __init__(self) -> None:
        self.until = 0.0
        self.hold = OFFLINE_HOLD_MIN
        self.fallbacks_seen = 0

    def active(self) -> bool:
        return time.monotonic() < self.until

    def after_act(self, fallbacks: int) -> None:
        """Record the agent's fallback count after an act()."""
        if fallbacks != self.fallbacks_seen:
            self.fallbacks_seen = fallbacks
            self.until = time.monotonic() + self.hold
            self.hold = min(OFFLINE_HOLD_MAX, self.hold * 2)
        else:
            self.hold = OFFLINE_HOLD_MIN


class _Outage:
    """The one outage of ``--flaky``: started mid-run, and the episodes it spans kept in ``result.outage``."""

    def __init__(self, proxy: Any, episodes: int) -> None:
        self.proxy = proxy
        # The middle of a run that learns in the usual number of episodes.
        self.episode = max(1, min(episodes // 2, 60)) if proxy is not None else None
        self.open = False

    def before_episode(self, episode: int, result: DemoResult, display: Progress | None) -> None:
        if episode != self.episode:
            return
        self.proxy.down(OUTAGE_SECONDS)
        self.open = True
        result.outage = (episode + 1, episode + 1)
        if display is not None:
            display.message(f"episode {episode + 1}: the link goes down for {OUTAGE_SECONDS:g} s")

    def after_episode(self, episode: int, result: DemoResult) -> None:
        if self.open and result.outage is not None:
            result.outage = (result.outage[0], episode + 1)
            self.open = self.proxy.is_down


class _Clock:
    """The environment's control period (STEP_PERIOD): a late step is not made up for."""

    def __init__(self) -> None:
        self.next_tick = time.monotonic()

    def wait(self) -> None:
        self.next_tick += STEP_PERIOD
        delay = self.next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            self.next_tick = time.monotonic()  # late (act, or waiting for the learner): no catching up


class _Loop:
    """The loop a user writes (act, env.step, step), with the demo's measurements around it."""

    def __init__(self, env: Any, agent: RemoteAgent, pacer: _Pacer, outage: _Outage, rng: random.Random,
                 display: Progress | None) -> None:
        self.env = env
        self.agent = agent
        self.pacer = pacer
        self.outage = outage
        self.rng = rng
        self.display = display
        self.result = DemoResult()
        self.step_times: list[float] = []
        self.act_times: list[float] = []
        self.local = _LocalActing()
        self.clock = _Clock()

    def run(self, episodes: int, seed: int) -> None:
        window: deque = deque(maxlen=WINDOW)
        obs, _ = self.env.reset(seed=seed)
        self.env.action_space.seed(seed)
        for episode in range(episodes):
            self.outage.before_episode(episode, self.result, self.display)
            eps = max(EPS_END, EPS_START * EPS_DECAY**episode)
            if episode:
                obs, _ = self.env.reset()
            total = self.episode(obs, eps)
            self.result.returns.append(total)
            self.outage.after_episode(episode, self.result)
            window.append(total)
            average = sum(window) / len(window)
            self.report(episode, total, average, eps)
            if len(window) == WINDOW and average >= SOLVED_AVERAGE:
                self.result.solved_at = episode + 1
                break

    def episode(self, obs: Any, eps: float) -> float:
        """One episode from ``obs``; returns its return."""
        total, done = 0.0, False
        while not done:
            action = self.act(obs, eps)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            done = bool(terminated or truncated)
            t0 = time.perf_counter()
            # done means "no future from here": a time limit is not a failure, so it is not terminal.
            self.agent.step(obs, action, float(reward), next_obs, bool(terminated))
            self.step_times.append(time.perf_counter() - t0)
            obs = next_obs
            total += reward
            self.result.env_steps += 1
            self.result.peak_pending = max(self.result.peak_pending, self.agent.pending)
            if self.result.env_steps % INFO_EVERY == 0:
                self.pacer.wait_for_learner()
            self.clock.wait()
        return total

    def act(self, obs: Any, eps: float) -> Any:
        if self.local.active():
            self.result.local_actions += 1
            return self.rng.randrange(2)  # the link is down: do not pay act_timeout on every step
        t0 = time.perf_counter()
        action = self.agent.act(obs, noise=eps)
        self.act_times.append(time.perf_counter() - t0)
        self.local.after_act(self.agent.stats["act_fallbacks"])
        return action

    def report(self, episode: int, total: float, average: float, eps: float) -> None:
        if self.display is None:
            return
        online = {True: "online", False: "OFFLINE", None: "-"}[self.agent.stats.get("online")]
        # Most telling first: a narrow terminal cuts the end of the line.
        self.display.update(episode + 1, note=(
            f"avg{WINDOW} {average:5.1f}  queue {self.agent.pending} {online}  "
            f"learned {self.pacer.learned}/{self.pacer.received}  return {total:3.0f}  eps {eps:.2f}"))

    def latencies(self) -> None:
        """Fill the result's step() and act() latencies and the time spent waiting for the learner."""
        r = self.result
        r.step_p50_ms = _percentile(self.step_times, 0.50) * 1000
        r.step_p99_ms = _percentile(self.step_times, 0.99) * 1000
        r.step_max_ms = max(self.step_times, default=0.0) * 1000
        r.throttle_seconds = self.pacer.waited
        r.act_p99_ms = _percentile(self.act_times, 0.99) * 1000
        r.act_max_ms = max(self.act_times, default=0.0) * 1000


def _loop(gym: Any, agent: RemoteAgent, admin: Client, proxy: Any, *, episodes: int, seed: int, rng: random.Random,
          quiet: bool, err: TextIO) -> DemoResult:
    env = gym.make(ENV_ID)
    display = None if quiet else progress(total=episodes, label="episode", stream=err, bar=False)
    loop = _Loop(env, agent, _Pacer(admin, agent.agent_name), _Outage(proxy, episodes), rng, display)
    try:
        loop.run(episodes, seed)
    finally:
        env.close()
        if display is not None:
            display.close()
    loop.latencies()
    return loop.result


# --- the end --------------------------------------------------------------------------------------


def _count_deliveries(result: DemoResult, agent: RemoteAgent, admin: Client, proxy: Any) -> None:
    """Flush, then fill in what the client sent and the server received (and, with a proxy, its log's checks)."""
    result.flushed = agent.flush(timeout=120)
    stats = agent.stats
    result.enqueued = int(stats.get("enqueued", 0))
    result.delivered = int(stats.get("delivered", 0))
    result.act_fallbacks = int(stats.get("act_fallbacks", 0))
    result.act_remote = int(stats.get("act_remote", 0))
    result.act_local = int(stats.get("act_local", 0))
    result.policy_version = stats.get("policy_version")
    agent.close(timeout=5)
    pacer = _Pacer(admin, agent.agent_name)
    pacer.refresh()
    result.policy_lag = pacer.policy_lag
    result.steps_received, result.steps_learned = pacer.received, pacer.learned
    if proxy is not None:
        entries = _read_log(admin, agent.agent_name)
        result.log_entries = len(entries)
        result.log_duplicates = len(entries) - len(set(entries))
        result.proxy_stats = dict(proxy.stats)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _version_note(version: str | None) -> str:
    return f" (policy {version[:8]})" if version else ""


def _print_summary(r: DemoResult, *, out: TextIO, flaky: bool, workdir: Path | None) -> None:
    def say(text: str = "") -> None:
        print(text, file=out)

    last = r.returns[-WINDOW:]
    average = sum(last) / len(last) if last else 0.0
    say()
    if r.solved_at is not None:
        say(f"solved: the average return of the last {WINDOW} episodes reached {average:.1f} "
            f"at episode {r.solved_at} ({r.env_steps} steps, {format_duration(r.wall_time)} wall time)")
    else:
        say(f"not solved in {len(r.returns)} episodes: average of the last {min(WINDOW, len(last))} is "
            f"{average:.1f} ({r.env_steps} steps, {format_duration(r.wall_time)} wall time)")
    say(f"steps: {r.enqueued} sent by the client, {r.delivered} acknowledged, {r.steps_received} received by the "
        f"server, {r.steps_learned} learned")
    say(f"step() latency in the loop: p50 {r.step_p50_ms:.3f} ms, p99 {r.step_p99_ms:.3f} ms, "
        f"max {r.step_max_ms:.1f} ms")
    if r.throttle_seconds >= 0.1:
        say(f"the loop waited {r.throttle_seconds:.1f} s in all for the server's learner to catch up")
    if flaky:
        ps = r.proxy_stats
        say(f"flaky link: {ps.get('resets', 0)} resets, {ps.get('dropped_responses', 0)} dropped answers, "
            f"{ps.get('stalls', 0)} stalls, {ps.get('refused', 0) + ps.get('cuts', 0)} connections refused or cut "
            f"during a {OUTAGE_SECONDS:g} s outage (episodes {r.outage[0]}-{r.outage[1]})" if r.outage else
            f"flaky link: {ps.get('resets', 0)} resets, {ps.get('dropped_responses', 0)} dropped answers, "
            f"{ps.get('stalls', 0)} stalls")
        say(f"act(): p99 {r.act_p99_ms:.1f} ms, max {r.act_max_ms:.0f} ms (deadline {ACT_TIMEOUT * 1000:.0f} ms); "
            f"{r.act_fallbacks} fallbacks to a random action, then {r.local_actions} random actions without asking")
        if r.outage:
            during = r.returns[r.outage[0] - 1:r.outage[1]]
            before = r.returns[max(0, r.outage[0] - 1 - len(during)):r.outage[0] - 1]
            say(f"episodes {r.outage[0]}-{r.outage[1]} (the outage): average return {_mean(during):.1f}, "
                f"against {_mean(before):.1f} in the {len(before)} before "
                f"({'the policy acted here' if r.act_local else 'random actions while the link was down'})")
        say(f"queue: peak {r.peak_pending} pending transitions, drained to 0" if r.flushed else
            f"queue: peak {r.peak_pending} pending, NOT drained")
        dup = "no duplicates" if r.log_duplicates == 0 else f"{r.log_duplicates} DUPLICATES"
        say(f"server log: {r.log_entries} entries, {dup}")
    say(f"act() ({r.policy}): {r.act_remote} answered by the server, {r.act_local} by the agent's policy run "
        f"here{_version_note(r.policy_version)}, {r.act_fallbacks + r.local_actions} random")
    lag = r.policy_lag or {}
    if lag.get("count"):
        say(f"policy lag of the learnt steps whose action was chosen here: p50 {lag['p50']}, p90 {lag['p90']}, "
            f"max {lag['max']} policy updates behind the server's (over {lag['count']} steps)")
    if r.plot:
        say(f"learning curve: {r.plot}")
    if workdir is not None:
        say(f"undelivered steps stay in {workdir / 'queue'} (agents-bar-stream queue replay)")
    if r.ok:
        say("every transition reached the server exactly once")
    else:
        say("MISMATCH: the server's count differs from what the client sent")

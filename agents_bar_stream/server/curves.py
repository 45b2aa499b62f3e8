"""Small, bounded histories for the dashboard: a learning curve and episode returns per agent.

Both live in memory, one per :class:`~agents_bar_stream.server.learner.AgentRuntime`, and start
empty when the server starts (the dashboard shows what this server process has learned; the log
itself is in the store). Their cost on the learner's path is a clock read and a comparison per
chunk of steps (the loss) and two dictionary operations per step (the returns).

Standard library only: no torch, no fastapi.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["EpisodeReturns", "SampleRing"]

#: Points kept per curve. A chart of a few hundred pixels needs no more.
CURVE_POINTS = 240
#: Seconds between two loss samples at first; doubled each time the ring is thinned.
CURVE_INTERVAL = 1.0
#: Episode returns kept per agent (the latest ones).
RETURNS_KEPT = 240
#: Producers whose unfinished episode an agent tracks; more are forgotten (oldest first).
OPEN_EPISODES_KEPT = 1024


class SampleRing:
    """``(time, {name: value})`` samples over the whole run, in at most ``points`` entries.

    A sample is taken at most once per ``interval``; when the ring is full every other sample is
    dropped and the interval doubles, so the curve always spans from the first sample to now at
    an even density (a plain ``deque(maxlen)`` would show only the last few minutes of a day's run).
    """

    def __init__(self, points: int = CURVE_POINTS, interval: float = CURVE_INTERVAL) -> None:
        if points < 2 or interval <= 0:
            raise ValueError("points must be >= 2 and interval > 0")
        self._points = points
        self.interval = interval
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._lock = threading.Lock()  # the learner appends, request threads read

    def offer(self, when: float, values: Mapping[str, float]) -> bool:
        """Keep ``values`` at ``when`` if the last kept sample is ``interval`` old; whether it was kept."""
        if not values:
            return False
        with self._lock:
            if self._samples and when - self._samples[-1][0] < self.interval:
                return False
            if len(self._samples) >= self._points:
                self._samples = self._samples[::2]
                self.interval *= 2
            self._samples.append((when, dict(values)))
            return True

    def snapshot(self) -> list[tuple[float, dict[str, float]]]:
        with self._lock:
            return list(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


class EpisodeReturns:
    """The returns (sums of rewards) of the latest episodes, from the steps' ``reward`` and ``done``.

    Steps of several producers (worker processes, queues) interleave in an agent's log, so each
    producer's episode is summed apart; a legacy ``POST /step`` has no producer and is summed under
    ``None``. An episode is complete at a step with ``done`` true.
    """

    def __init__(self, kept: int = RETURNS_KEPT) -> None:
        self._open: dict[Any, float] = {}
        self._done: deque[tuple[float, float]] = deque(maxlen=kept)
        self._lock = threading.Lock()
        self.episodes = 0  # completed episodes since the server started

    def add(self, when: float, producer_id: str | None, reward: float, done: bool) -> None:
        # Called from the learner thread only; the lock is for readers on request threads.
        total = self._open.pop(producer_id, 0.0) + reward
        if done:
            with self._lock:
                self._done.append((when, total))
                self.episodes += 1
            return
        if len(self._open) >= OPEN_EPISODES_KEPT:
            # Producers come and go (each restarted queue is a new one); an episode a vanished
            # producer never finished must not be kept forever.
            self._open.pop(next(iter(self._open)))
        self._open[producer_id] = total  # re-inserted last: the dict's order is the recency order

    def snapshot(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._done)

"""Learner placement across replicas that share one PostgreSQL store, and the weights they follow.

One :class:`Placement` thread per server process (only with a shared store). About once a second
it tries to take the learner lock (``ReplicaSession.try_lead``, a session advisory lock) of the
agents that no replica learns, up to a fair share (``ceil(agents / learning replicas)``; a replica
over it hands one agent over per round, saved first); the replica that gets one claims a new epoch
(``PostgresStore.claim_learner``) and starts the agent's learner from the last saved weights and
cursor. Every other replica keeps the agent only for ``act``: when the learner saves, PostgreSQL
notifies the weights' version and they load it (``AgentRuntime.refresh``).

When a replica dies its session ends, PostgreSQL drops its locks, and another replica takes the
agents over at its next round (within ``interval`` seconds of the death being noticed). What was
learned after the dead replica's last save is learned again by the new one: at most
``--save-interval`` seconds of learning. Saves are fenced by the epoch, so a replica that lost its
session while still running can never overwrite the weights of the one that took over.
"""

from __future__ import annotations

import logging
import threading
import time

from agents_bar_stream.server.learner import Learners
from agents_bar_stream.server.store_pg import PostgresStore, ReplicaSession

__all__ = ["Placement"]

logger = logging.getLogger(__name__)

#: Seconds between two placement rounds (and the longest a weights notification waits to be read).
PLACEMENT_INTERVAL = 1.0


class Placement:
    """Takes, holds and gives up this replica's learners; follows the others' weights. See the module docstring."""

    def __init__(self, store: PostgresStore, learners: Learners, *, interval: float = PLACEMENT_INTERVAL) -> None:
        self._store = store
        self._learners = learners
        self._interval = interval
        self._session: ReplicaSession | None = None
        self._held: dict[int, int] = {}  # agent id -> the epoch this replica learns it with
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agents-bar-placement", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking agents (the locks held stay held until :meth:`close`, so the final saves are fenced right)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def close(self) -> None:
        """Give up every agent (after the learners saved): other replicas take them at once."""
        self.stop()
        for agent_id, epoch in list(self._held.items()):
            try:
                self._store.release_learner(agent_id, epoch)
            except Exception:  # the session's end releases the lock anyway
                logger.warning("agent %s: could not record that this replica stopped learning it", agent_id)
        self._held.clear()
        if self._session is not None:
            self._session.close()
            self._session = None

    def _run(self) -> None:
        failures, logged_at = 0, 0.0
        while not self._stop.is_set():
            try:
                if self._session is None or self._session.broken:
                    self._new_session()
                assert self._session is not None
                self._round(self._session)
                for agent_id, version in self._session.wait(self._interval):
                    runtime = self._learners.peek(agent_id)
                    if runtime is not None:
                        runtime.refresh(version)
                if failures:
                    logger.info("learner placement works again after %d failed rounds", failures)
                failures = 0
            except Exception as exc:
                # While the database is away this fails every round: the first failure with its
                # traceback, then a line a minute, so that an outage does not flood the log.
                failures += 1
                now = time.monotonic()
                if failures == 1:
                    logger.warning("learner placement failed; trying again every %.0f s", self._interval,
                                   exc_info=True)
                    logged_at = now
                elif now - logged_at >= 60:
                    logger.warning("learner placement still failing (%d rounds): %s", failures, exc)
                    logged_at = now
                self._stop.wait(self._interval)

    def _new_session(self) -> None:
        if self._session is not None:
            # The old session is gone, and its locks with it: another replica may learn these
            # agents already. Stop ours now (their next save would be fenced off anyway).
            for agent_id in list(self._held):
                self._give_up(agent_id)
            self._session.close()
            self._session = None
        self._session = self._store.session(learning=self._learners.learn)

    def _hand_over(self, session: ReplicaSession, agent_id: int) -> None:
        epoch = self._held.pop(agent_id)
        runtime = self._learners.peek(agent_id)
        if runtime is not None:
            runtime.hand_over()
        self._store.release_learner(agent_id, epoch)
        session.resign(agent_id)
        logger.info("agent %s: handed over by this replica (%s) for a fair share", agent_id,
                    self._learners.replica_id)

    def _give_up(self, agent_id: int) -> None:
        self._held.pop(agent_id, None)
        runtime = self._learners.peek(agent_id)
        if runtime is not None and runtime.leading:
            runtime._fenced()

    def _round(self, session: ReplicaSession) -> None:
        session.ping()  # raises when the session (and its locks) is gone
        rows = self._store.list_agents()
        live = {row.id for row in rows}
        for agent_id in self._learners.ids():
            if agent_id not in live:  # deleted through another replica
                self._held.pop(agent_id, None)
                self._learners.remove(agent_id)
        for agent_id in [a for a in self._held if a not in live]:
            self._held.pop(agent_id, None)
            session.resign(agent_id)
        for agent_id in list(self._held):
            runtime = self._learners.peek(agent_id)
            if runtime is None or not runtime.leading:  # fenced off, or removed: let another take it
                self._held.pop(agent_id, None)
                session.resign(agent_id)
        # Notifications are the fast path; this catches any that were missed (a session renewed).
        for agent_id, version in self._store.checkpoint_versions().items():
            runtime = self._learners.peek(agent_id)
            if runtime is not None:
                runtime.refresh(version)
        if not self._learners.learn:
            return
        # A fair share: no replica learns more than ceil(agents / live replicas), so learners
        # spread over the replicas; one that holds more (others joined since) hands one over per
        # round, saved first, so that its new learner resumes exactly where it stopped.
        fair = -(-len(rows) // session.live_replicas())
        if len(self._held) > fair:
            self._hand_over(session, next(iter(self._held)))
        for row in rows:
            if self._stop.is_set() or len(self._held) >= fair:
                return
            if row.id in self._held or not session.try_lead(row.id):
                continue
            try:
                runtime = self._learners.get(row)
                epoch = self._store.claim_learner(row.id, self._learners.replica_id)
            except Exception:
                session.resign(row.id)
                raise
            if epoch is None:  # deleted meanwhile
                session.resign(row.id)
                continue
            self._held[row.id] = epoch
            logger.info("agent %s: this replica (%s) learns it now (epoch %d)", row.id, self._learners.replica_id,
                        epoch)
            runtime.lead(epoch)

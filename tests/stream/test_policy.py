"""The flusher's retry policy, as pure functions of tenacity's retry state."""

from __future__ import annotations

from tenacity import RetryCallState, Retrying

from agents_bar_stream.config import RetryPolicy
from agents_bar_stream.exceptions import (
    AgentNotFoundError,
    AuthenticationError,
    ConnectionFailedError,
    InvalidStepError,
    ServerBusyError,
)
from agents_bar_stream.flusher import FlusherWait, is_transient


def _state(attempt: int, exc: BaseException) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_backoff_grows_with_full_jitter_and_is_capped():
    wait = FlusherWait(RetryPolicy(initial=0.1, max_delay=5.0))
    for attempt in range(1, 30):
        bound = min(5.0, 0.1 * 2 ** (attempt - 1))
        samples = [wait(_state(attempt, ConnectionFailedError("down"))) for _ in range(200)]
        assert all(0 <= s <= bound + 1e-9 for s in samples)
        if attempt >= 4:  # full jitter: spread over the whole range, not stuck at the bound
            assert min(samples) < bound / 2 < max(samples)


def test_retry_after_is_honoured_up_to_the_cap():
    wait = FlusherWait(RetryPolicy(initial=0.1, max_delay=30.0))
    assert wait(_state(1, ServerBusyError(429, "slow down", retry_after=7.0))) >= 7.0
    assert wait(_state(1, ServerBusyError(503, "later", retry_after=3600.0))) <= 30.0


def test_what_is_retried_forever_and_what_is_not():
    assert is_transient(ConnectionFailedError("refused"))
    assert is_transient(ServerBusyError(503, "x"))
    assert is_transient(AgentNotFoundError(404, "no such agent"))  # may be being created
    assert is_transient(AuthenticationError("refused token"))  # keep the data, report, retry
    assert not is_transient(InvalidStepError("bad"))
    assert not is_transient(RuntimeError("a bug"))

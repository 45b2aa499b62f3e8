"""The pacing of on_error (flusher.Alerts) as a pure function of time: which failures are reported."""

from __future__ import annotations

from agents_bar_stream.exceptions import AuthenticationError, ConnectionFailedError
from agents_bar_stream.flusher import Alerts


def _alerts(interval: float = 10.0) -> tuple[Alerts, list]:
    seen: list = []
    return Alerts(lambda exc, info: seen.append((info["kind"], info["seconds"])), interval), seen


def test_an_outage_is_reported_once_it_lasted_the_interval_then_once_per_interval():
    alerts, seen = _alerts()
    exc = ConnectionFailedError("refused")
    reported = [t for t in (0, 1, 5, 9.9, 10, 12, 19.9, 20, 25, 31) if alerts.failed(exc, "outage", {}, now=100 + t)]
    assert reported == [10, 20, 31]
    assert seen == [("outage", 10), ("outage", 20), ("outage", 31)]


def test_immediate_kinds_are_reported_at_once_and_paced_separately():
    alerts, seen = _alerts()
    auth = AuthenticationError("refused")
    assert alerts.failed(auth, "authentication", {}, now=0)
    assert not alerts.failed(auth, "authentication", {}, now=5)
    assert alerts.failed(ConnectionFailedError("x"), "outage", {}, now=10)  # its own clock; the problem began at 0
    assert alerts.failed(auth, "authentication", {}, now=10)
    assert [k for k, _ in seen] == ["authentication", "outage", "authentication"]


def test_an_answer_ends_the_problem_and_a_new_one_waits_again():
    alerts, seen = _alerts()
    exc = ConnectionFailedError("x")
    assert alerts.failed(exc, "outage", {}, now=10) is False
    assert alerts.failed(exc, "outage", {}, now=20)  # lasted 10 s since its first failure at 10
    alerts.clear()
    assert not alerts.failed(exc, "outage", {}, now=21)
    assert not alerts.failed(exc, "outage", {}, now=30)
    assert alerts.failed(exc, "outage", {}, now=31)


def test_no_callback_is_fine_and_a_raising_one_is_contained(caplog):
    quiet = Alerts(None, 1.0)
    assert quiet.failed(ConnectionFailedError("x"), "wrong_service", {}, now=0)

    def bad(exc, info):
        raise ValueError("broken callback")

    loud = Alerts(bad, 1.0)
    assert loud.failed(ConnectionFailedError("x"), "wrong_service", {}, now=0)  # reported; the error only logged
    assert any("on_error callback raised" in r.getMessage() for r in caplog.records)

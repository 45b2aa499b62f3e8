"""Each answer of the server, as the flusher acts on it: 200, 409, 413, 422, the legacy /step, a 401.

The real-server tests (test_answers.py, test_numbering.py, test_faults.py) reach most of these
branches only by restarting a server with other limits or a lost database. Here a scripted
transport plays the server's answers instead, the way sentry-python tests its worker with a fake
transport: this fake only injects what a server would say. Everything else is real: the
:class:`Session` (token, re-login), the :class:`Flusher` and a :class:`DiskQueue` in ``tmp_path``.
Each test drives the flusher one batch at a time with ``deliver_once()`` on the test's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agents_bar_stream.config import RetryPolicy, Timeouts
from agents_bar_stream.exceptions import WrongServiceError
from agents_bar_stream.flusher import Flusher
from agents_bar_stream.protocol import StepEncoder
from agents_bar_stream.session import Session
from agents_bar_stream.storage import DiskQueue
from agents_bar_stream.transport import Response

AGENT = "fake-agent"
STEPS = f"/agents/{AGENT}/steps"
INFO = {"protocol": 1, "max_batch_steps": 1000, "max_batch_bytes": 8 * 2**20}

Answer = Callable[[dict[str, Any]], Response]


def answer(status: int, body: Any = None, *, content: bytes | None = None,
           content_type: str = "application/json") -> Answer:
    """An answer of the server: ``body`` as JSON, or raw ``content`` (an HTML page, say)."""
    raw = content if content is not None else (b"" if body is None else orjson.dumps(body))

    def make(request: dict[str, Any]) -> Response:
        return Response(status, {"Content-Type": content_type}, raw, request["method"], request["path"])

    return make


class ScriptedTransport:
    """Plays the answers scripted for each path, in order, and records every request it was sent.

    ``/stream/info`` answers ``INFO`` and ``/login/access-token`` a fresh token unless scripted.
    A request with no answer left fails the test (an AssertionError is never retried).
    """

    def __init__(self, script: dict[str, list[Answer]]) -> None:
        self.timeouts = Timeouts()
        self.script = {path: list(answers) for path, answers in script.items()}
        self.requests: list[dict[str, Any]] = []
        self.logins = 0

    def request(self, method: str, path: str, *, body: bytes | None = None, form: Any = None, params: Any = None,
                token: str | None = None, timeout: Any = None) -> Response:
        request = {"method": method, "path": path, "token": token,
                   "body": orjson.loads(body) if body else None}
        self.requests.append(request)
        if path == "/login/access-token" and not self.script.get(path):
            self.logins += 1
            return answer(200, {"access_token": f"token-{self.logins}", "token_type": "bearer"})(request)
        if path == "/stream/info" and not self.script.get(path):
            return answer(200, INFO)(request)
        assert self.script.get(path), f"no answer scripted for {method} {path}"
        return self.script[path].pop(0)(request)

    def sent(self, path: str = STEPS) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        pass


def encoded(n: int, first: int = 0) -> list[bytes]:
    encoder = StepEncoder()
    return [encoder.encode([float(i)] * 4, i % 2, 0.0, [float(i + 1)] * 4, False) for i in range(first, first + n)]


@pytest.fixture
def queue(tmp_path):
    q = DiskQueue(tmp_path / "queue", service_url="http://fake.invalid", agent_name=AGENT)
    yield q
    q.close()


def make_flusher(queue: DiskQueue, transport: ScriptedTransport, *, batch_size: int = 1000,
                 session: Session | None = None) -> tuple[Flusher, list[tuple[int, int]]]:
    if session is None:
        session = Session("http://fake.invalid", access_token="a-token", transport=transport)  # type: ignore[arg-type]
    progress: list[tuple[int, int]] = []
    flusher = Flusher(queue, session, AGENT, batch_size=batch_size, flush_interval=0.0,
                      policy=RetryPolicy(initial=0.001, max_delay=0.002),
                      on_progress=lambda consumed, freed: progress.append((consumed, freed)))
    return flusher, progress


def seqs(request: dict[str, Any]) -> list[int]:
    """The wire numbers of the steps in one POST /steps."""
    first = request["body"]["first_seq"]
    return list(range(first, first + len(request["body"]["steps"])))


def test_200_acknowledges_and_deletes_what_the_server_acked(queue):
    queue.write_segment(0, encoded(10), 0.0)
    transport = ScriptedTransport({STEPS: [answer(200, {"acked_seq": 9, "duplicates": 2})]})
    flusher, progress = make_flusher(queue, transport)
    flusher.deliver_once()
    assert [seqs(r) for r in transport.sent()] == [list(range(10))]
    assert transport.sent()[0]["body"]["producer_id"] == queue.producer_id
    assert queue.committed_pending() == 0
    assert flusher.stats.delivered == 10 and flusher.stats.duplicates == 2
    assert flusher.stats.online is True and flusher.stats.mode == "stream"
    assert len(progress) == 1 and progress[0][0] == 10 and progress[0][1] > 0  # (steps consumed, bytes freed)


def test_200_acking_part_of_a_batch_resends_the_rest(queue):
    queue.write_segment(0, encoded(10), 0.0)
    transport = ScriptedTransport({STEPS: [answer(200, {"acked_seq": 3}), answer(200, {"acked_seq": 9})]})
    flusher, _ = make_flusher(queue, transport)
    flusher.deliver_once()
    assert queue.committed_pending() == 6 and flusher.stats.delivered == 4
    flusher.deliver_once()
    assert [seqs(r) for r in transport.sent()] == [list(range(10)), list(range(4, 10))]
    assert queue.committed_pending() == 0 and flusher.stats.delivered == 10


def test_200_without_acked_seq_is_retried_not_taken_as_an_ack(queue):
    # A proxy's page with status 200: not the server's answer, so nothing may be deleted.
    queue.write_segment(0, encoded(3), 0.0)
    transport = ScriptedTransport({STEPS: [answer(200, content=b"<html>ok</html>", content_type="text/html"),
                                           answer(200, {"ok": True}),
                                           answer(200, {"acked_seq": 2})]})
    flusher, _ = make_flusher(queue, transport)
    flusher.deliver_once()
    assert len(transport.sent()) == 3
    assert flusher.stats.retries == 2 and "acked_seq" in flusher.stats.last_error
    assert queue.committed_pending() == 0 and flusher.stats.delivered == 3


def test_503_and_429_are_retried_with_the_batch_kept(queue):
    queue.write_segment(0, encoded(2), 0.0)
    transport = ScriptedTransport({STEPS: [answer(503, {"detail": "busy"}), answer(429, {"detail": "slow down"}),
                                           answer(200, {"acked_seq": 1})]})
    flusher, _ = make_flusher(queue, transport)
    flusher.deliver_once()
    assert [seqs(r) for r in transport.sent()] == [[0, 1]] * 3
    assert flusher.stats.retries == 2 and flusher.stats.delivered == 2


def test_409_below_what_is_held_rewinds_and_resends(queue):
    queue.write_segment(0, encoded(10), 0.0)
    transport = ScriptedTransport({STEPS: [answer(200, {"acked_seq": 5}),
                                           answer(409, {"detail": "gap", "expected_seq": 3}),
                                           answer(200, {"acked_seq": 9})]})
    flusher, _ = make_flusher(queue, transport)
    flusher.deliver_once()
    flusher.deliver_once()  # sends 6..9; the server expects 3, which is still in the segment held here
    assert flusher.stats.sequence_lost == 0
    flusher.deliver_once()
    assert [seqs(r) for r in transport.sent()] == [list(range(10)), list(range(6, 10)), list(range(3, 10))]
    assert queue.committed_pending() == 0


def test_409_for_steps_already_deleted_counts_sequence_lost_and_goes_on(queue):
    queue.write_segment(0, encoded(5), 0.0)
    queue.write_segment(5, encoded(5, first=5), 0.0)
    transport = ScriptedTransport({STEPS: [answer(200, {"acked_seq": 4}),
                                           answer(409, {"detail": "gap", "expected_seq": 2}),
                                           answer(200, {"acked_seq": 6})]})
    flusher, _ = make_flusher(queue, transport, batch_size=5)
    flusher.deliver_once()  # 0..4 acknowledged: their segment is deleted
    flusher.deliver_once()  # the server lost them and asks for 2
    assert flusher.stats.sequence_lost == 1
    assert "already deleted" in flusher.stats.last_error
    flusher.deliver_once()  # the steps still held go on from the number the server expects
    assert seqs(transport.sent()[-1]) == [2, 3, 4, 5, 6]
    assert queue.committed_pending() == 0 and flusher.stats.delivered == 10


def test_409_without_expected_seq_is_retried(queue):
    queue.write_segment(0, encoded(2), 0.0)
    transport = ScriptedTransport({STEPS: [answer(409, content=b"conflict", content_type="text/plain"),
                                           answer(200, {"acked_seq": 1})]})
    flusher, _ = make_flusher(queue, transport)
    flusher.deliver_once()
    assert flusher.stats.retries == 1 and flusher.stats.sequence_lost == 0 and flusher.stats.delivered == 2


def test_413_halves_the_batch_and_takes_the_limits_it_names(queue):
    queue.write_segment(0, encoded(8), 0.0)
    transport = ScriptedTransport({STEPS: [answer(413, {"detail": "too large", "max_batch_steps": 3}),
                                           answer(200, {"acked_seq": 2}), answer(200, {"acked_seq": 5}),
                                           answer(200, {"acked_seq": 7})]})
    flusher, _ = make_flusher(queue, transport)
    for _ in range(4):
        flusher.deliver_once()
    assert [len(seqs(r)) for r in transport.sent()] == [8, 3, 3, 2]
    assert flusher.max_steps == 3
    assert queue.committed_pending() == 0 and flusher.stats.dead_lettered == 0


def test_413_of_a_proxy_without_limits_still_halves(queue):
    queue.write_segment(0, encoded(8), 0.0)
    transport = ScriptedTransport({STEPS: [answer(413, content=b"<html>413</html>", content_type="text/html"),
                                           answer(200, {"acked_seq": 3}), answer(200, {"acked_seq": 7})]})
    flusher, _ = make_flusher(queue, transport)
    for _ in range(3):
        flusher.deliver_once()
    assert [len(seqs(r)) for r in transport.sent()] == [8, 4, 4]


def test_413_of_a_single_step_dead_letters_it(queue):
    queue.write_segment(0, encoded(1), 0.0)
    transport = ScriptedTransport({STEPS: [answer(413, {"detail": "this step alone is too large"})]})
    flusher, progress = make_flusher(queue, transport)
    flusher.deliver_once()
    assert flusher.stats.dead_lettered == 1 and queue.committed_pending() == 0
    assert [(r["status"], r["detail"]) for r in queue.dead_letter_records()] == [(413, "this step alone is too large")]
    assert progress == [(0, 0)]


def test_422_with_an_index_sends_the_good_steps_then_dead_letters_the_bad_one(queue):
    queue.write_segment(0, encoded(6), 0.0)
    transport = ScriptedTransport({STEPS: [answer(422, {"detail": "bad action", "index": 2}),
                                           answer(200, {"acked_seq": 1}),
                                           answer(422, {"detail": "bad action", "index": 0}),
                                           answer(200, {"acked_seq": 4})]})
    flusher, _ = make_flusher(queue, transport)
    for _ in range(4):
        flusher.deliver_once()
    # The dead letter leaves no gap on the wire: the step after it takes its number.
    assert [seqs(r) for r in transport.sent()] == [[0, 1, 2, 3, 4, 5], [0, 1], [2, 3, 4, 5], [2, 3, 4]]
    assert flusher.stats.dead_lettered == 1 and flusher.stats.delivered == 5
    records = queue.dead_letter_records()
    assert [(r["status"], r["step"]["obs"][0]) for r in records] == [(422, 2.0)]


def test_422_without_an_index_narrows_down_to_the_step_refused_alone(queue):
    queue.write_segment(0, encoded(3), 0.0)
    transport = ScriptedTransport({STEPS: [answer(422, {"detail": "something in there"}),
                                           answer(200, {"acked_seq": 0}),
                                           answer(422, {"detail": "something in there"}),
                                           answer(422, {"detail": "this one"}),
                                           answer(200, {"acked_seq": 1})]})
    flusher, _ = make_flusher(queue, transport)
    for _ in range(5):
        flusher.deliver_once()
    # One step at a time after a 422 that names none; only a step refused alone is dead-lettered.
    assert [seqs(r) for r in transport.sent()] == [[0, 1, 2], [0], [1, 2], [1], [1]]
    assert [r["detail"] for r in queue.dead_letter_records()] == ["this one"]
    assert flusher.stats.dead_lettered == 1 and flusher.stats.delivered == 2


def test_an_old_server_gets_one_step_per_request_on_step(queue):
    queue.write_segment(0, encoded(3), 0.0)
    step = f"/agents/{AGENT}/step"
    transport = ScriptedTransport({
        "/stream/info": [answer(404, {"detail": "Not Found"})],
        step: [answer(200, {}), answer(422, {"detail": "bad step"}), answer(409, {"detail": "?"}), answer(200, {})],
    })
    flusher, _ = make_flusher(queue, transport)
    for _ in range(4):
        flusher.deliver_once()
    assert flusher.legacy is True and flusher.stats.mode == "legacy"
    bodies = [r["body"]["step_data"]["obs"][0] for r in transport.sent(step)]
    assert bodies == [0.0, 1.0, 2.0, 2.0]  # one each; the 422 is dead-lettered, the 409 kept and sent again
    assert flusher.stats.dead_lettered == 1 and flusher.stats.delivered == 2
    assert queue.committed_pending() == 0


def test_a_stream_info_that_is_no_agents_bar_raises_wrong_service(queue):
    queue.write_segment(0, encoded(1), 0.0)
    transport = ScriptedTransport({"/stream/info": [answer(200, content=b"<html></html>", content_type="text/html")]})
    flusher, _ = make_flusher(queue, transport)
    with pytest.raises(WrongServiceError, match="does not look like an Agents Bar"):
        flusher.deliver_once()
    assert transport.sent() == [] and queue.committed_pending() == 1


def test_401_logs_in_again_once_and_resends_with_the_new_token(queue):
    queue.write_segment(0, encoded(2), 0.0)
    transport = ScriptedTransport({STEPS: [answer(401, {"detail": "token expired"}), answer(200, {"acked_seq": 1})]})
    session = Session("http://fake.invalid", username="robot", password="secret-pw",
                      transport=transport)  # type: ignore[arg-type]
    flusher, _ = make_flusher(queue, transport, session=session)
    flusher.deliver_once()
    assert [r["token"] for r in transport.sent()] == ["token-1", "token-2"]
    assert transport.logins == 2 and flusher.stats.retries == 0
    assert queue.committed_pending() == 0


def test_a_refused_token_without_credentials_is_retried_and_keeps_the_steps(queue):
    queue.write_segment(0, encoded(1), 0.0)
    transport = ScriptedTransport({STEPS: [answer(401, {"detail": "no"}), answer(200, {"acked_seq": 0})]})
    flusher, _ = make_flusher(queue, transport)
    flusher.deliver_once()
    assert flusher.stats.retries == 1 and "401" in flusher.stats.last_error
    assert flusher.stats.delivered == 1

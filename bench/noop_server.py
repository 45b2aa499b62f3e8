"""A minimal server that speaks just enough of the protocol and does nothing with the steps.

It answers ``GET /api/v1/stream/info``, ``POST /api/v1/login/access-token``,
``POST /api/v1/agents/{name}/steps`` (the body is parsed with orjson and acknowledged with a
correct ``{"acked_seq", "applied", "duplicates"}``, tracked per agent and producer) and
``POST /api/v1/agents/{name}/step`` (the published client's one step per request). Nothing is
stored, so the client's delivery rate against it is the ceiling set by the client and HTTP on
loopback. ``GET /noop/count`` tells how many steps were applied.

    python bench/noop_server.py --port 0 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

_PREFIX = "/api/v1"
_INFO = orjson.dumps({"protocol": 1, "max_batch_steps": 10_000, "max_batch_bytes": 8 * 2**20})
_TOKEN = orjson.dumps({"access_token": "noop-token", "token_type": "bearer"})
_REASONS = {200: b"OK", 404: b"Not Found", 409: b"Conflict", 422: b"Unprocessable Entity"}

_lock = threading.Lock()
_acked: dict = {}  # (agent, producer) -> acked_seq
_counts = {"applied": 0, "duplicates": 0, "requests": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _reply(self, status: int, body: bytes) -> None:
        # One write for head and body: one segment on the wire.
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            status, _REASONS.get(status, b"?"), len(body))
        self.wfile.write(head + body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?", 1)[0] == _PREFIX + "/stream/info":
            self._reply(200, _INFO)
        elif self.path == "/noop/count":
            with _lock:
                self._reply(200, orjson.dumps(_counts))
        else:
            self._reply(404, b'{"detail":"not found"}')

    def do_POST(self) -> None:  # noqa: N802
        raw = self._body()
        path = self.path.split("?", 1)[0]
        if path == _PREFIX + "/login/access-token":
            self._reply(200, _TOKEN)
            return
        parts = path[len(_PREFIX):].split("/")  # ['', 'agents', name, 'steps']
        if len(parts) == 4 and parts[1] == "agents" and parts[3] in ("steps", "step"):
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._reply(422, b'{"detail":"not JSON"}')
                return
            if parts[3] == "step":
                with _lock:
                    _counts["applied"] += 1
                    _counts["requests"] += 1
                self._reply(200, b"{}")
                return
            steps, first = body["steps"], int(body["first_seq"])
            key = (parts[2], body["producer_id"])
            with _lock:
                acked = _acked.get(key, -1)
                if first > acked + 1:
                    self._reply(409, orjson.dumps({"detail": "gap", "expected_seq": acked + 1}))
                    return
                last = first + len(steps) - 1
                applied = max(0, last - acked)
                _acked[key] = max(acked, last)
                _counts["applied"] += applied
                _counts["duplicates"] += len(steps) - applied
                _counts["requests"] += 1
                answer = {"acked_seq": _acked[key], "applied": applied, "duplicates": len(steps) - applied}
            self._reply(200, orjson.dumps(answer))
            return
        self._reply(404, b'{"detail":"not found"}')


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    server = Server((args.host, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(f"{server.server_address[1]}\n")
        os.replace(tmp, args.port_file)
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A round-robin HTTP/1.1 load balancer for tests: each request goes to the next upstream.

Like a real load balancer in front of replicas: the client keeps one keep-alive connection to
the proxy, and every request on it is sent, on a fresh upstream connection, to the next upstream
in turn. An upstream that refuses the connection (a replica that is down) is skipped, as a load
balancer's health check would; an upstream that dies while a request is in flight makes the
proxy close the client's connection, which the client sees as a connection error (the ambiguous
case: the replica may have committed the request before it died).

Only what the project's server speaks: requests and answers with a ``Content-Length`` (or no
body); anything chunked closes the connection. Every wait has a timeout; ``stop()`` returns
within a few seconds.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections import Counter
from urllib.parse import urlsplit

__all__ = ["RoundRobinProxy"]

_MAX_HEAD = 64 * 1024
_TIMEOUT = 60.0  # seconds an upstream may take to answer; the client's own deadline is shorter


class _Closed(Exception):
    """The peer closed the connection (or broke the protocol): drop this client connection."""


def _read_head(sock: socket.socket, buf: bytearray) -> bytes:
    """The head (up to and including the blank line) of the next message; the rest stays in ``buf``."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[: end + 4])
            del buf[: end + 4]
            return head
        if len(buf) > _MAX_HEAD:
            raise _Closed("head too large")
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed("closed")
        buf += chunk


def _read_body(sock: socket.socket, buf: bytearray, head: bytes) -> bytes:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            raise _Closed("chunked bodies are not supported here")
        if name == b"content-length":
            length = int(value.strip())
    while len(buf) < length:
        chunk = sock.recv(max(65536, length - len(buf)))
        if not chunk:
            raise _Closed("closed mid-body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return body


def _status(head: bytes) -> int:
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


class RoundRobinProxy:
    """Listens on 127.0.0.1 (a free port); ``url`` is its base URL. A context manager."""

    def __init__(self, upstream_urls: list[str]) -> None:
        self.upstreams = [(urlsplit(u).hostname or "127.0.0.1", urlsplit(u).port or 80) for u in upstream_urls]
        self._next = itertools.cycle(range(len(self.upstreams)))
        self._lock = threading.Lock()
        #: Requests answered by each upstream (by index), and connections it refused.
        self.served: Counter[int] = Counter()
        self.refused: Counter[int] = Counter()
        self.cut = 0  # client connections closed because the upstream died mid-request
        self.cut_requests: list[str] = []  # their request lines
        #: Requests sent and not answered yet, by (upstream, request line): a test kills one mid-request.
        self.in_flight: Counter[tuple[int, str]] = Counter()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._clients: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="rr-proxy", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(_TIMEOUT)
            with self._lock:
                self._clients.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="rr-proxy-conn", daemon=True).start()

    def _pick(self) -> tuple[int, socket.socket]:
        """The next upstream that accepts a connection (each tried once), and that connection."""
        for _ in range(len(self.upstreams)):
            with self._lock:
                index = next(self._next)
            try:
                return index, socket.create_connection(self.upstreams[index], timeout=2.0)
            except OSError:
                with self._lock:
                    self.refused[index] += 1
        raise _Closed("no upstream accepts connections")

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self._stop.is_set():
                head = _read_head(client, buf)
                body = _read_body(client, buf, head)
                index, upstream = self._pick()
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                with upstream:
                    upstream.settimeout(_TIMEOUT)
                    with self._lock:
                        self.in_flight[index, line] += 1
                    try:
                        upstream.sendall(head + body)
                        ubuf = bytearray()
                        answer = _read_head(upstream, ubuf)
                        status = _status(answer)
                        answer_body = b"" if status in (204, 304) else _read_body(upstream, ubuf, answer)
                    except (OSError, _Closed):
                        with self._lock:
                            self.cut += 1
                            self.cut_requests.append(line)
                        raise _Closed("upstream died mid-request") from None
                    finally:
                        with self._lock:
                            self.in_flight[index, line] -= 1
                with self._lock:
                    self.served[index] += 1
                client.sendall(answer + answer_body)
                if b"connection: close" in head.lower():
                    return
        except (OSError, _Closed, ValueError):
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def busy(self, index: int, request_part: str) -> bool:
        """Whether upstream ``index`` is handling a request whose request line contains ``request_part``."""
        with self._lock:
            return any(n > 0 and i == index and request_part in line for (i, line), n in self.in_flight.items())

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> RoundRobinProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

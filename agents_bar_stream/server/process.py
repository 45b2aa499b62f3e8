"""Run the server in a subprocess: for tests, demos and benchmarks.

Standard library only (no fastapi, torch or requests), so that client tests can use it cheaply::

    with LocalServer(tmp_path / "server", users=[("alice", "secret")]) as server:
        client = Client(base_url=server.url, username="alice", password="secret")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["LocalServer", "ServerStartError"]

_PROBE_PATH = "/api/v1/stream/info"


class ServerStartError(RuntimeError):
    """The server process exited, or did not answer, before the start timeout."""


class LocalServer:
    """``python -m agents_bar_stream serve`` in a child process, on ``host`` and ``port`` (0: any free port).

    The server keeps all state in ``data_dir``; :meth:`restart` starts a new process on the same
    directory and the same port, so URLs and tokens handed out before stay valid. Its output goes
    to ``data_dir/server.log``. Every wait has a timeout.
    """

    def __init__(
        self,
        data_dir,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Iterable[tuple[str, str]] = (),
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.users: list[tuple[str, str]] = list(users)
        self.extra_args = list(extra_args)
        self.python = python
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"
        self._port_file = self.data_dir / "server.port"
        self._user_file: str | None = None  # exists only while the process starts

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43123`` (no trailing slash, no ``/api/v1``)."""
        if not self.port:
            raise RuntimeError("the server has not been started yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        cmd = [
            self.python, "-m", "agents_bar_stream", "serve",
            "--host", self.host,
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--port-file", str(self._port_file),
        ]  # fmt: skip
        if self._user_file is not None:
            # Passwords travel in a 0600 file, never in arguments: those are in every `ps` listing.
            cmd += ["--user-file", self._user_file]
        return cmd + self.extra_args

    def start(self, timeout: float = 60.0) -> LocalServer:
        """Start the process and wait until it answers HTTP; raises :class:`ServerStartError`."""
        if self.running:
            raise RuntimeError("the server is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._port_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.users:
            fd, self._user_file = tempfile.mkstemp(prefix="agents-bar-users-", text=True)  # mode 0600
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(f"{name}:{password}\n" for name, password in self.users)
        try:
            # The log is the owner's alone (it can name agents and accounts): 0600 whatever the umask.
            with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
                self.process = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            return self._wait_started(timeout)
        finally:
            # The server read it before it answered (or it is gone): no copy of the passwords stays.
            if self._user_file is not None:
                os.unlink(self._user_file)
                self._user_file = None

    def _wait_started(self, timeout: float) -> LocalServer:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerStartError(f"the server exited with status {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            port = self._read_port()
            if port and self._answers(port):
                self.port = port
                return self
            time.sleep(0.05)

    def _read_port(self) -> int | None:
        try:
            text = self._port_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _answers(self, port: int) -> bool:
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{_PROBE_PATH}", timeout=2.0) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as err:
            return err.code == 404  # a --part1-only server has no /stream/info, but it answers
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: the server finishes requests and saves weights. SIGKILL after ``timeout``.

        Returns the exit status (``None`` when it was not running). Idempotent.
        """
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is saved beyond what was already committed."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self, timeout: float = 60.0, *, kill: bool = False) -> LocalServer:
        """Stop (or, with ``kill=True``, SIGKILL) and start again on the same data dir and port."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> LocalServer:  # noqa: PYI034 - typing.Self needs Python 3.11
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalServer({str(self.data_dir)!r}, port={self.port}, {state})"

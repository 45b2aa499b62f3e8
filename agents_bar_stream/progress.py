"""A one-line progress display for the command line (standard library only).

On a terminal the line is redrawn in place (``\\r``), at most every ``interval`` seconds; anywhere
else (a pipe, a log file, CI) a plain line is printed every ``plain_interval`` seconds, so that logs
stay readable and are not flooded with carriage returns::

    >>> import io
    >>> out = io.StringIO()
    >>> p = Progress(total=10, label="replay", stream=out, tty=False)
    >>> p.update(10, force=True)
    >>> p.close()
    >>> out.getvalue().split()[:3]
    ['replay', '10/10', '100%']
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, Optional, TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: Optional[float]) -> str:
    """``h:mm:ss`` or ``m:ss``; ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts toward ``total`` (or open-ended when it is None) and shows count, rate and ETA.

    ``update(done, note=...)`` records the count and redraws when it is time; ``message(text)``
    prints a whole line without garbling the bar; ``close()`` draws the final state and ends the
    line. ``tty`` overrides the terminal detection (tests use it); ``bar_width=0`` draws no bar.
    """

    def __init__(self, total: Optional[int] = None, *, label: str = "", unit: str = "", stream: Optional[TextIO] = None,
                 tty: Optional[bool] = None, interval: float = 0.1, plain_interval: float = 2.0,
                 bar_width: int = 24, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = interval if tty else plain_interval
        self.bar_width = bar_width
        self._clock = clock
        self._start = clock()
        self._last_draw: Optional[float] = None
        self._drawn_width = 0
        self._drawn_state: Optional[tuple] = None
        self.done = 0
        self.note = ""
        self._closed = False

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    @property
    def rate(self) -> Optional[float]:
        """Units per second since the start (None before any time has passed)."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else None

    @property
    def eta(self) -> Optional[float]:
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(0, self.total - self.done) / rate

    def render(self) -> str:
        """The current line, without a line ending."""
        parts = [self.label] if self.label else []
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            fraction = min(1.0, max(0.0, self.done / self.total))
            if self.tty and self.bar_width > 0:
                filled = int(round(fraction * self.bar_width))
                parts.append("[" + "#" * filled + "." * (self.bar_width - filled) + "]")
            parts.append(f"{self.done}/{self.total}{unit} {fraction:4.0%}")
        else:
            parts.append(f"{self.done}{unit}")
        rate = self.rate
        if rate is not None:
            parts.append(f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s")
        if self.total:
            parts.append(f"ETA {format_duration(self.eta)}")
        else:
            parts.append(format_duration(self.elapsed))
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def update(self, done: int, *, note: Optional[str] = None, force: bool = False) -> None:
        """Record ``done`` units (and a short ``note``); redraw when ``interval`` has passed or ``force``."""
        self.done = done
        if note is not None:
            self.note = note
        now = self._clock()
        if force or self._last_draw is None or now - self._last_draw >= self.interval:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self._drawn_state = (self.done, self.note)
        line = self.render()
        if self.tty:
            width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
            line = line[:width]
            pad = " " * max(0, self._drawn_width - len(line))
            self.stream.write("\r" + line + pad)
            self._drawn_width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print ``text`` on a line of its own; the bar is redrawn under it at the next update."""
        if self.tty and self._drawn_width:
            self.stream.write("\r" + " " * self._drawn_width + "\r")
            self._drawn_width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.tty or self._drawn_state != (self.done, self.note):  # a plain log needs no repeated line
            self._draw(self._clock())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

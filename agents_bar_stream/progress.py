"""Progress for the command line: tqdm on a terminal, plain lines anywhere else.

On a terminal, :func:`progress` hands the display to ``tqdm`` (a line redrawn in place, with rate
and ETA) when it is installed; it comes with the ``server`` extra and is not a dependency of the
client. Anywhere else (a pipe, a log file, CI), and on a terminal without tqdm, it prints a plain
line every ``plain_interval`` seconds: tqdm redraws with carriage returns even when the output is
not a terminal, which leaves a log with one endless line and a reader of a pipe with no line at all
until the end. ::

    >>> import io
    >>> out = io.StringIO()
    >>> p = progress(total=10, label="replay", stream=out)
    >>> p.update(10)
    >>> p.close()
    >>> out.getvalue().split()[:3]
    ['replay', '10/10', '100%']
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

__all__ = ["PlainProgress", "Progress", "format_duration", "progress"]


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` or ``m:ss``; ``--:--`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress(Protocol):
    """What the commands call: the count so far (and a short note), a whole line, and the end."""

    def update(self, done: int, *, note: str | None = None) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


def progress(total: int | None = None, *, label: str = "", unit: str = "", stream: TextIO | None = None,
             tty: bool | None = None, bar: bool = True) -> Progress:
    """A display counting toward ``total`` (open-ended when None) on ``stream`` (default: stderr).

    ``tty`` overrides the terminal detection; ``bar=False`` asks tqdm for no bar, leaving the room
    to a long note.
    """
    stream = stream if stream is not None else sys.stderr
    if tty is None:
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
    if tty:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return _TqdmProgress(tqdm, total=total, label=label, unit=unit, stream=stream, bar=bar)
    return PlainProgress(total=total, label=label, unit=unit, stream=stream)


class _TqdmProgress:
    """tqdm behind the :class:`Progress` calls (absolute counts, a note as tqdm's postfix)."""

    _NO_BAR = "{n_fmt}/{total_fmt} {percentage:3.0f}% [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def __init__(self, tqdm: Any, *, total: int | None, label: str, unit: str, stream: TextIO, bar: bool) -> None:
        no_bar = ("{desc}: " if label else "") + self._NO_BAR
        self._bar = tqdm(total=total, desc=label or None, unit=unit or "it", file=stream, dynamic_ncols=True,
                         mininterval=0.1, bar_format=None if bar or total is None else no_bar)
        self._note = ""

    def update(self, done: int, *, note: str | None = None) -> None:
        if note is not None and note != self._note:
            self._note = note
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(done - self._bar.n)  # tqdm counts increments; tqdm itself limits the redraws

    def message(self, text: str) -> None:
        self._bar.write(text, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


class PlainProgress:
    """Plain lines, one every ``interval`` seconds: count, percentage, rate, ETA and the note.

    The first update prints at once (a reader of the pipe learns that the work has started); ``close()``
    prints the final state unless that very line was the last one printed. Idempotent close.
    """

    def __init__(self, total: int | None = None, *, label: str = "", unit: str = "", stream: TextIO | None = None,
                 interval: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._clock = clock
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn_state: tuple[int, str] | None = None
        self.done = 0
        self.note = ""
        self._closed = False

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    @property
    def rate(self) -> float | None:
        """Units per second since the start (None before any time has passed)."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else None

    @property
    def eta(self) -> float | None:
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
            parts.append(f"{self.done}/{self.total}{unit} {fraction:4.0%}")
        else:
            parts.append(f"{self.done}{unit}")
        rate = self.rate
        if rate is not None:
            parts.append(f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s")
        parts.append(f"ETA {format_duration(self.eta)}" if self.total else format_duration(self.elapsed))
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def update(self, done: int, *, note: str | None = None) -> None:
        """Record ``done`` units (and a short ``note``); print a line when ``interval`` has passed."""
        self.done = done
        if note is not None:
            self.note = note
        now = self._clock()
        if self._last_draw is None or now - self._last_draw >= self.interval:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self._drawn_state = (self.done, self.note)
        self.stream.write(self.render() + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._drawn_state != (self.done, self.note):  # a log needs no repeated line
            self._draw(self._clock())

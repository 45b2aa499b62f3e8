"""How a queue's local step numbers map to the numbers the server knows: pure functions, no I/O, no locks.

Every queued step gets a *local* number, 0, 1, 2, ... in the order of the ``step()`` calls, and keeps
it. The server must see its producer's numbers without a gap, so the *wire* number of a step is its
local number minus the steps removed before it without delivery (dead letters, ``drop_oldest``)
minus a ``shift`` (a resync with a server that lacks steps this client no longer holds).

Ranges are ``[start, end)`` lists of local numbers, sorted and disjoint. ``removed_before`` counts
the removed steps already folded away (all below the consumed mark); ``removed`` holds the rest.
"""

from __future__ import annotations

__all__ = ["count_in", "local_for_wire", "range_end", "wire_seq", "with_range", "without"]

Ranges = list[list[int]]


def with_range(ranges: Ranges, start: int, end: int) -> Ranges:
    """A new sorted list of disjoint ranges: ``ranges`` plus ``[start, end)``, merged."""
    merged: Ranges = []
    for r in sorted([*ranges, [start, end]]):
        if merged and merged[-1][1] >= r[0]:
            merged[-1] = [merged[-1][0], max(merged[-1][1], r[1])]
        else:
            merged.append(list(r))
    return merged


def without(ranges: Ranges, minus: Ranges) -> Ranges:
    """The parts of ``ranges`` that no range of ``minus`` covers."""
    out: Ranges = []
    for start, end in ranges:
        for a, b in minus:
            if b <= start or a >= end:
                continue
            if a > start:
                out.append([start, a])
            start = max(start, b)
            if start >= end:
                break
        if start < end:
            out.append([start, end])
    return out


def range_end(ranges: Ranges, local: int) -> int | None:
    """If ``local`` lies in one of ``ranges``, the end of that range; else None."""
    for start, end in ranges:
        if start <= local < end:
            return end
    return None


def count_in(ranges: Ranges, first: int, end: int) -> int:
    """How many numbers of ``[first, end)`` the ranges cover."""
    return sum(max(0, min(b, end) - max(a, first)) for a, b in ranges)


def wire_seq(local: int, removed_before: int, removed: Ranges, shift: int) -> int:
    """The number the server knows local step ``local`` by."""
    gone = removed_before
    for start, end in removed:
        if start >= local:
            break
        gone += min(end, local) - start
    return local - gone - shift


def local_for_wire(wire: int, first_local: int, removed_before: int, removed: Ranges, shift: int) -> int:
    """The inverse of :func:`wire_seq` for locals from ``first_local`` on (which must not be removed)."""
    local = first_local + (wire - wire_seq(first_local, removed_before, removed, shift))
    for start, end in removed:
        if first_local <= start <= local:
            local += end - start
    return local

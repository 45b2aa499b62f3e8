"""How a segment (consecutive queued steps) is laid out on disk, and the check of what is read back.

A segment is one value in the queue's database: a header, then the steps' orjson bytes joined by
newlines (orjson never writes a raw newline, so the split is exact). Two layouts exist:

- version 2 (written now): ``b"ABQ2"``, the enqueue time of the first step (float64), the number of
  steps (uint32) and the CRC-32 of the body (uint32), little-endian; 20 bytes.
- version 1 (written before checksums): the time and the count only; 12 bytes.

A disk, a filesystem or a person can hand back other bytes than were written. What is read is
checked before it is trusted: the CRC of a version-2 body, and for both versions that the body
holds exactly the number of steps its header counts. A segment that fails is never split,
renumbered or sent; :class:`SegmentDamaged` says why and the queue sets it aside.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["Segment", "SegmentDamaged", "decode_segment", "encode_segment", "unchecked_items"]

_MAGIC = b"ABQ2"
_HEADER_V2 = struct.Struct("<4sdII")  # magic, time of the first step, number of steps, CRC-32 of the body
_HEADER_V1 = struct.Struct("<dI")  # time of the first step, number of steps


class Segment:
    """What the queue knows of one stored segment: its first local number, and, once its header was
    read, how many steps it holds, its size in bytes and the enqueue time of its first step."""

    __slots__ = ("first", "count", "nbytes", "time")

    def __init__(self, first: int, count: int | None = None, nbytes: int | None = None,
                 time: float | None = None) -> None:
        self.first = first
        self.count = count
        self.nbytes = nbytes
        self.time = time

    @property
    def end(self) -> int:
        """One past its last local number (its header must have been read)."""
        assert self.count is not None
        return self.first + self.count

    def __repr__(self) -> str:
        return f"Segment(first={self.first}, count={self.count}, nbytes={self.nbytes})"


class SegmentDamaged(Exception):
    """What was read back is not what was written (the reason is the message)."""


def encode_segment(items: list[bytes], t: float) -> bytes:
    """The stored form of ``items`` (steps queued from time ``t`` on)."""
    body = b"\n".join(items)
    return _HEADER_V2.pack(_MAGIC, t, len(items), zlib.crc32(body)) + body


def decode_segment(blob: bytes) -> tuple[float, list[bytes]]:
    """``(time, items)`` of a stored segment; raises :class:`SegmentDamaged` when the bytes fail their check."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SegmentDamaged(f"not a segment: a {type(blob).__name__}")
    blob = bytes(blob)
    if blob[:4] == _MAGIC and len(blob) >= _HEADER_V2.size:
        _magic, t, count, crc = _HEADER_V2.unpack_from(blob)
        body = blob[_HEADER_V2.size:]
        if zlib.crc32(body) != crc:
            raise SegmentDamaged(f"checksum mismatch over {len(body)} bytes (header counts {count} steps)")
    elif len(blob) >= _HEADER_V1.size:
        t, count = _HEADER_V1.unpack_from(blob)
        body = blob[_HEADER_V1.size:]
    else:
        raise SegmentDamaged(f"{len(blob)} bytes, shorter than any header")
    items = body.split(b"\n") if body else []
    if count == 0 or len(items) != count or not all(items):
        raise SegmentDamaged(f"the header counts {count} steps, the body holds {len(items)}")
    return t, items


def unchecked_items(blob: bytes) -> list[bytes]:
    """The non-empty lines of a segment's body, without any check: for a person salvaging a damaged one."""
    header = _HEADER_V2.size if blob[:4] == _MAGIC else _HEADER_V1.size
    return [line for line in bytes(blob[header:]).split(b"\n") if line]

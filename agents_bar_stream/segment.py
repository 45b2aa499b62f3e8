"""How a segment (consecutive queued steps) is laid out on disk, and the check of what is read back.

A segment is one value in the queue's database: a header, then the steps' orjson bytes joined by
newlines (orjson never writes a raw newline, so the split is exact). Two layouts exist:

- version 2 (written now): ``b"ABQ2"``, the enqueue time of the first step (float64), the number of
  steps (uint32) and the CRC-32 of the body (uint32), little-endian; 20 bytes.
- version 1 (written before checksums): the time and the count only; 12 bytes.

- version 3 (written when a segment holds an array step, issue 12): ``b"ABQ3"``, the time (float64),
  the number of steps, the CRC-32 of the stored body, the length of the body once decompressed and
  a flags byte (bit 0: the body is one zstd frame); 25 bytes. The body is each item preceded by its
  length (uint32): an array step's raw bytes may hold newlines. Compressed with zstd when
  ``zstandard`` is installed (the ``arrays`` extra), which also makes a step's ``next_obs``, repeated
  as the next step's ``obs``, cost almost nothing; without it the body is stored as it is. The
  committer thread (or step() with ``durability="step"``) compresses; zstd releases the GIL.

A disk, a filesystem or a person can hand back other bytes than were written. What is read is
checked before it is trusted: the CRC of a version-2 body, and for both versions that the body
holds exactly the number of steps its header counts. A segment that fails is never split,
renumbered or sent; :class:`SegmentDamaged` says why and the queue sets it aside.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from agents_bar_stream.exceptions import StorageError
from agents_bar_stream.wire import is_array_item, item_to_json

__all__ = ["Segment", "SegmentDamaged", "decode_segment", "encode_segment", "unchecked_items"]

_MAGIC = b"ABQ2"
_HEADER_V2 = struct.Struct("<4sdII")  # magic, time of the first step, number of steps, CRC-32 of the body
_HEADER_V1 = struct.Struct("<dI")  # time of the first step, number of steps
_MAGIC_V3 = b"ABQ3"
# magic, time of the first step, number of steps, CRC-32 of the stored body, decompressed length, flags
_HEADER_V3 = struct.Struct("<4sdIIIB")
_ZSTD = 1  # flag: the stored body is one zstd frame
_LEN = struct.Struct("<I")
# zstd level 1: the fastest; it still finds a repeated 28 KB frame (its window is far larger) and
# rendered frames' flat areas. Measured in bench/bench_arrays.py.
_ZSTD_LEVEL = 1


def _zstd() -> Any:
    """The zstandard module, or None when the ``arrays`` extra is not installed."""
    try:
        import zstandard  # noqa: PLC0415 - optional: only array steps use it
    except ImportError:
        return None
    return zstandard


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
    if items and is_array_item(items[0]):
        return _encode_v3(items, t)  # frames: never joined here (megabytes copied under the GIL)
    body = b"\n".join(items)
    # orjson escapes control characters: a byte 0x01 anywhere means an array step may be here (its
    # tag); none means list steps only, told by one scan at C speed, not a Python loop over 4096 items.
    if body.find(b"\x01") >= 0 and any(map(is_array_item, items)):
        return _encode_v3(items, t)
    return _HEADER_V2.pack(_MAGIC, t, len(items), zlib.crc32(body)) + body


def _encode_v3(items: list[bytes], t: float) -> bytes:
    raw_len = sum(map(len, items)) + _LEN.size * len(items)
    zstandard = _zstd()
    if zstandard is not None:
        # Streamed item by item, not joined first: a join copies megabytes while holding the GIL,
        # and step() (on the user's thread) would wait for it; zstd's own work releases the GIL.
        stream = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj(size=raw_len)
        parts = []
        for item in items:
            parts.append(stream.compress(_LEN.pack(len(item))))
            parts.append(stream.compress(item))
        parts.append(stream.flush())
        packed = b"".join(parts)
        if len(packed) < raw_len:
            return _HEADER_V3.pack(_MAGIC_V3, t, len(items), zlib.crc32(packed), raw_len, _ZSTD) + packed
    raw = b"".join([part for item in items for part in (_LEN.pack(len(item)), item)])
    return _HEADER_V3.pack(_MAGIC_V3, t, len(items), zlib.crc32(raw), raw_len, 0) + raw


def _decode_v3(blob: bytes) -> tuple[float, int, list[bytes]]:
    _magic, t, count, crc, raw_len, flags = _HEADER_V3.unpack_from(blob)
    body = blob[_HEADER_V3.size:]
    if zlib.crc32(body) != crc:
        raise SegmentDamaged(f"checksum mismatch over {len(body)} bytes (header counts {count} steps)")
    if flags & _ZSTD:
        zstandard = _zstd()
        if zstandard is None:
            # Not damage: the bytes are good, this process cannot read them. Nothing is set aside.
            raise StorageError("this queue holds compressed array steps (zstd); install the `arrays` extra "
                               "(pip install 'agents-bar-stream[arrays]') to read it")
        try:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise SegmentDamaged(f"its zstd body does not decompress: {exc}") from None
    elif flags:
        raise SegmentDamaged(f"unknown flags {flags:#x} in its header")
    if len(body) != raw_len:
        raise SegmentDamaged(f"its body is {len(body)} bytes once read, the header says {raw_len}")
    items = []
    pos = 0
    while pos + _LEN.size <= len(body):
        (n,) = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        items.append(body[pos:pos + n])
        pos += n
    if pos != len(body) or any(len(item) == 0 for item in items):
        raise SegmentDamaged(f"its body does not split into whole steps (header counts {count})")
    return t, count, items


def decode_segment(blob: bytes) -> tuple[float, list[bytes]]:
    """``(time, items)`` of a stored segment; raises :class:`SegmentDamaged` when the bytes fail their check."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SegmentDamaged(f"not a segment: a {type(blob).__name__}")
    blob = bytes(blob)
    if blob[:4] == _MAGIC_V3 and len(blob) >= _HEADER_V3.size:
        t, count, items = _decode_v3(blob)
        if count == 0 or len(items) != count:
            raise SegmentDamaged(f"the header counts {count} steps, the body holds {len(items)}")
        return t, items
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
    """The non-empty lines of a segment's body, without any check: for a person salvaging a damaged one.

    Array steps (version 3) come back flattened to JSON, as far as their bytes can still be read.
    """
    if bytes(blob[:4]) == _MAGIC_V3:
        try:
            _t, _count, items = _decode_v3(bytes(blob))
        except (SegmentDamaged, StorageError):
            return []
        out = []
        for item in items:
            try:
                out.append(item_to_json(item))
            except ValueError:
                continue
        return out
    header = _HEADER_V2.size if blob[:4] == _MAGIC else _HEADER_V1.size
    return [line for line in bytes(blob[header:]).split(b"\n") if line]

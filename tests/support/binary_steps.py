"""A small encoder of the binary step encoding, written from docs/protocol.md ("Compact steps").

It is the tests' own, independent of the client's encoder (agents_bar_stream/wire.py), so that a
test of the server checks the server against the written contract, not against another piece of
the same code.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

MEDIA_TYPE = "application/x-agents-bar-steps"
MAGIC = b"ABS1"


class Body:
    """Collects arrays into a data section and hands out references to them."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.seen: dict[int, dict] = {}  # id(array) -> its reference, so a shared array is stored once

    def ref(self, array: np.ndarray) -> dict[str, Any]:
        known = self.seen.get(id(array))
        if known is not None:
            return known
        data = np.ascontiguousarray(array).tobytes()
        ref = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": self.size, "nbytes": len(data)}
        self.chunks.append(data)
        self.size += len(data)
        self.seen[id(array)] = ref
        return ref

    def encode(self, doc: dict[str, Any]) -> bytes:
        """``doc`` (the JSON body) with every numpy array in a step replaced by a reference."""
        steps = []
        for step in doc["steps"]:
            steps.append({k: (self.ref(v) if isinstance(v, np.ndarray) else v) for k, v in step.items()})
        header = orjson.dumps({**doc, "steps": steps})
        return pack(header, b"".join(self.chunks))


def pack(header: bytes, data: bytes, magic: bytes = MAGIC) -> bytes:
    return magic + struct.pack("<I", len(header)) + header + data


def encode(producer_id: str, first_seq: int, steps: list[dict[str, Any]]) -> bytes:
    return Body().encode({"producer_id": producer_id, "first_seq": first_seq, "steps": steps})


def headers(*, zstd: bool = False) -> dict[str, str]:
    out = {"Content-Type": MEDIA_TYPE}
    if zstd:
        out["Content-Encoding"] = "zstd"
    return out


def compress(body: bytes, level: int = 3) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(body)


def decode(body: bytes) -> dict[str, Any]:
    """A binary document (a log page): its JSON header with every array reference of a step replaced
    by the numpy array it points at, read by the rules of docs/protocol.md."""
    assert body[:4] == MAGIC, body[:8]
    (size,) = struct.unpack_from("<I", body, 4)
    doc = orjson.loads(body[8:8 + size])
    data = body[8 + size:]
    for entry in doc["steps"]:
        step = entry["step"]
        for key in ("obs", "next_obs", "action"):
            ref = step.get(key)
            if isinstance(ref, dict):
                raw = data[ref["offset"]:ref["offset"] + ref["nbytes"]]
                assert len(raw) == ref["nbytes"]
                step[key] = np.frombuffer(raw, dtype=np.dtype(ref["dtype"])).reshape(ref["shape"])
    return doc

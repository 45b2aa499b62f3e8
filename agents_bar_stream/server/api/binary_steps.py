"""Reading a ``POST /agents/{name}/steps`` body: JSON, or the binary step encoding, maybe zstd-compressed.

The binary encoding (docs/protocol.md, "Compact steps"): ``b"ABS1"``, a u32 little-endian H, H bytes
of UTF-8 JSON (the JSON body, where a step's ``obs``, ``next_obs`` or ``action`` may be an array
reference), then the data section the references point into. :func:`decode_body` turns any
accepted body into the JSON document with each reference replaced by a numpy view of its bytes,
or raises the HTTPProblem the protocol names (413 over a limit, 415 an unknown type or coding,
400 undecodable zstd, 422 a malformed body).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import orjson

from agents_bar_stream.server.api.inputs import parse_json
from agents_bar_stream.server.arrays import ARRAY_FIELDS, WIRE_MAGIC, MalformedArray, resolve_ref
from agents_bar_stream.server.errors import HTTPProblem

__all__ = ["CONTENT_ENCODINGS", "STEP_ENCODINGS", "STEPS_MEDIA_TYPE", "decode_body", "media_type"]

#: The Content-Type of a binary steps body.
STEPS_MEDIA_TYPE = "application/x-agents-bar-steps"
#: What ``GET /stream/info`` advertises.
STEP_ENCODINGS = [STEPS_MEDIA_TYPE]
CONTENT_ENCODINGS = ["zstd"]
_JSON_TYPES = frozenset({"application/json", ""})
_U32 = struct.Struct("<I")
# Decompressed in pieces of this size, so that a bomb stops at the limit plus one piece at most.
_ZSTD_PIECE = 1 << 20


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters (``""`` when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def decode_body(body: bytes, content_type: str | None, content_encoding: str | None, limit: int,
                too_large: dict[str, Any], max_steps: int) -> tuple[Any, bool]:
    """The JSON document of a steps body, array references resolved to numpy arrays, and whether the
    body was in the binary encoding (only then may a step hold arrays).

    The references of a batch of over ``max_steps`` steps are not read: the caller answers 413
    for it first (split it), as for a JSON body, whatever else is wrong with it.

    A body without a Content-Type is taken as JSON, as before this encoding existed (clients that
    post bytes without the header keep working).
    """
    kind = media_type(content_type)
    if kind not in _JSON_TYPES and kind != STEPS_MEDIA_TYPE:
        raise HTTPProblem(415, f"Content-Type {kind!r:.80} is not taken here; send application/json or "
                               f"{STEPS_MEDIA_TYPE}")
    coding = (content_encoding or "").strip().lower()
    if coding == "zstd":
        body = _decompress(body, limit, too_large)
    elif coding not in ("", "identity"):
        raise HTTPProblem(415, f"Content-Encoding {coding!r:.40} is not taken here; send zstd or none")
    if kind == STEPS_MEDIA_TYPE:
        return _decode_binary(body, max_steps), True
    return parse_json(body), False


def _decompress(body: bytes, limit: int, too_large: dict[str, Any]) -> bytes:
    """The one zstd frame of ``body``, refused (413) as soon as it grows past ``limit`` bytes."""
    import zstandard

    # The frame's window is memory the decoder allocates before writing a byte: a frame may ask for
    # 128 MiB (zstd's default ceiling) in a few bytes. A body is at most `limit` bytes, so a
    # window beyond that is never needed (zstd shrinks the window to the content's size).
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << max(10, (limit - 1).bit_length()))
    out = []
    size = 0
    try:
        # read_across_frames=False: the body is one frame (docs/protocol.md); reading stops at its end.
        with dctx.stream_reader(io.BytesIO(body), read_across_frames=False) as reader:
            while True:
                piece = reader.read(_ZSTD_PIECE)
                if not piece:
                    break
                size += len(piece)
                if size > limit:
                    raise HTTPProblem(413, f"the decompressed body is over the limit of {limit} bytes", **too_large)
                out.append(piece)
    except zstandard.ZstdError as exc:
        raise HTTPProblem(400, f"the body is not a valid zstd frame: {exc}") from None
    return b"".join(out)


def _decode_binary(body: bytes, max_steps: int) -> Any:
    if len(body) < 8:
        raise HTTPProblem(422, f"the binary body is {len(body)} bytes, shorter than its 8-byte preamble")
    if body[:4] != WIRE_MAGIC:
        raise HTTPProblem(422, f"the binary body must start with {WIRE_MAGIC!r}, got {bytes(body[:4])!r}")
    (size,) = _U32.unpack_from(body, 4)
    if 8 + size > len(body):
        raise HTTPProblem(422, f"the header length H is {size}, past the end of the body ({len(body) - 8} bytes "
                               "after the preamble)")
    try:
        doc = orjson.loads(memoryview(body)[8:8 + size])
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(422, f"the header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HTTPProblem(422, 'the header must be {"producer_id", "first_seq", "steps"}')
    steps = doc.get("steps")
    if type(steps) is list and len(steps) <= max_steps:
        data = memoryview(body)[8 + size:]
        cache: dict[tuple, Any] = {}
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue  # the step checks name it, with its index
            for key in ARRAY_FIELDS:
                value = step.get(key)
                if isinstance(value, dict):
                    try:
                        step[key] = resolve_ref(value, data, f"steps[{i}].{key}", cache)
                    except MalformedArray as exc:
                        raise HTTPProblem(422, f"malformed array reference: {exc}") from None
    return doc

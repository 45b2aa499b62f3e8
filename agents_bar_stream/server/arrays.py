"""Arrays in steps (issue 12): the binary step encoding's references, their checks, and the log's blobs.

A step decoded from an ``application/x-agents-bar-steps`` body holds its ``obs``, ``next_obs`` or
``action`` as a numpy array (a read-only view of the request's bytes) instead of a list. This module

- reads an array reference ``{"dtype", "shape", "offset", "nbytes"}`` of the wire
  (:func:`resolve_ref`, a :class:`MalformedArray` for a bad one: the body is refused whole);
- checks a step whose fields may be arrays with exactly the rules of a JSON list
  (:func:`validate_step_arrays`, an ``InvalidStepError`` for a step that will never be accepted);
- packs a slice of such steps into the log's compact form and reads it back (:func:`pack_steps`,
  :func:`unpack_steps`): the same layout as the wire body minus the envelope, so the array bytes
  are stored as they came (lossless, shared bytes stay shared) and no number becomes text.

numpy is imported here, so only the modules that serve requests or read the log import this one.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from agents_bar_stream.exceptions import InvalidStepError
from agents_bar_stream.protocol import MAX_MAGNITUDE, check_numbers

__all__ = [
    "DTYPES",
    "LOG_MAGIC",
    "LOG_MAGIC_ZSTD",
    "WIRE_MAGIC",
    "MalformedArray",
    "binary_page",
    "is_packed",
    "json_ready",
    "pack_steps",
    "resolve_ref",
    "step_to_json",
    "to_float32",
    "unpack_steps",
    "validate_step_arrays",
]

#: The first four bytes of a binary ``POST /steps`` body (docs/protocol.md, "Compact steps").
WIRE_MAGIC = b"ABS1"
#: The first four bytes of a log row stored in the compact form; an older row is orjson text and
#: starts with ``[``, so the two can never be mistaken for each other.
LOG_MAGIC = b"ABL1"
#: A log row in the compact form, zstd-compressed as a whole (when that made it smaller).
LOG_MAGIC_ZSTD = b"ABLZ"
#: The dtypes a reference may name: little-endian numpy dtype strings, as numpy writes them.
DTYPES: dict[str, np.dtype] = {name: np.dtype(name) for name in
                               ("|u1", "|i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8", "|b1")}
#: The step fields that may be array references.
ARRAY_FIELDS = ("obs", "next_obs", "action")
# numpy refuses more than 64 dimensions; nothing real needs more than a handful.
_MAX_NDIM = 32
_U32 = struct.Struct("<I")
_REF_KEYS = frozenset({"dtype", "shape", "offset", "nbytes"})


class MalformedArray(ValueError):
    """An array reference that does not follow the format; the message is a 422's detail."""


def resolve_ref(ref: Mapping[str, Any], data: memoryview, where: str, cache: dict[tuple, np.ndarray]) -> np.ndarray:
    """The array a reference points at in ``data`` (a read-only view, no copy); raises MalformedArray.

    ``cache`` maps a reference's ``(dtype, shape, offset)`` to the array already made for it, so that
    references sharing bytes (step i's ``next_obs`` and step i+1's ``obs``) yield one array object,
    which :func:`pack_steps` then stores once.
    """
    if set(ref) != _REF_KEYS:
        raise MalformedArray(f"{where} must be a list of numbers or an array reference with exactly the keys "
                             f"dtype, shape, offset, nbytes; got keys {sorted(ref)!r:.120}")
    name = ref["dtype"]
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise MalformedArray(f"{where}.dtype {name!r:.40} is not one of {' '.join(DTYPES)}")
    shape = ref["shape"]
    if (type(shape) is not list or len(shape) > _MAX_NDIM
            or any(type(n) is not int or n < 0 for n in shape)):
        raise MalformedArray(f"{where}.shape must be a list of at most {_MAX_NDIM} integers >= 0, got {shape!r:.80}")
    offset, nbytes = ref["offset"], ref["nbytes"]
    for key, value in (("offset", offset), ("nbytes", nbytes)):
        if type(value) is not int or value < 0:
            raise MalformedArray(f"{where}.{key} must be an integer >= 0, got {value!r:.40}")
    count = math.prod(shape)
    if nbytes != count * dtype.itemsize:
        raise MalformedArray(f"{where}.nbytes is {nbytes}, but shape {shape} of {name} takes "
                             f"{count * dtype.itemsize} bytes")
    if offset + nbytes > len(data):
        raise MalformedArray(f"{where} points at bytes {offset}..{offset + nbytes}, past the end of the "
                             f"data section ({len(data)} bytes)")
    key = (name, tuple(shape), offset)
    array = cache.get(key)
    if array is None:
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        cache[key] = array
    return array


def _check_array(name: str, value: np.ndarray, size: int | None) -> None:
    """The rules of a JSON list (protocol.check_numbers) applied to an array, at C speed."""
    if value.dtype.kind == "b":
        # A JSON list of true/false is refused (booleans are not numbers); so is its array.
        raise InvalidStepError(f"{name} has dtype |b1: booleans are not numbers")
    if size is not None and value.size != size:
        raise InvalidStepError(f"{name} must have {size} numbers, got {value.size} (shape {list(value.shape)})")
    if value.dtype.kind != "f":
        return  # integers of up to 64 bits: always within float32's range, like a JSON integer
    if value.dtype.itemsize < 8:
        ok = np.isfinite(value)  # float16/32 cannot exceed float32's range once finite
    else:
        ok = np.abs(value) <= MAX_MAGNITUDE  # False for NaN too
    if not ok.all():
        i = int(np.flatnonzero(~ok.ravel())[0])
        v = float(value.ravel()[i])
        what = "is not a number (NaN)" if math.isnan(v) else (
            f"is out of range ({v:.6g}): numbers must be finite and at most {MAX_MAGNITUDE:.4g} in magnitude (float32)")
        raise InvalidStepError(f"{name}[{i}] {what}")


def _check_field(name: str, value: Any, size: int | None, shape: Sequence[int] | None) -> None:
    if isinstance(value, np.ndarray):
        _check_array(name, value, size)
        if shape is not None and value.ndim > 1 and list(value.shape) != list(shape):
            raise InvalidStepError(f"{name} has shape {list(value.shape)}; this agent's observations have shape "
                                   f"{list(shape)} (or are flat)")
    else:
        check_numbers(name, value, size)


def validate_step_arrays(
    step: Any, *, obs_size: int | None, action_size: int | None, discrete: bool | None,
    obs_shape: Sequence[int] | None = None, obs_dtype: str | None = None,
) -> None:
    """``protocol.validate_step`` for a step whose ``obs``/``next_obs``/``action`` may be arrays.

    The same checks in the same order with the same messages; an array also has to have the
    agent's ``obs_shape`` (when it declares one and the array is not flat) and ``obs_dtype``
    (when it declares one, a numpy name such as ``"uint8"``). Raises ``InvalidStepError``.
    """
    if not isinstance(step, Mapping):
        raise InvalidStepError(f"a step must be an object, got {type(step).__name__}")
    for key in ("obs", "action", "reward", "next_obs", "done"):
        if key not in step:
            raise InvalidStepError(f"step is missing '{key}'")
    want = np.dtype(obs_dtype).str if obs_dtype is not None else None  # "uint8" -> "|u1"
    for key in ("obs", "next_obs"):
        value = step[key]
        _check_field(key, value, obs_size, obs_shape)
        if want is not None and isinstance(value, np.ndarray) and value.dtype.str != want:
            raise InvalidStepError(f"{key} has dtype {value.dtype.str}; this agent's observations are "
                                   f"{obs_dtype} ({want})")
    action = step["action"]
    if discrete and isinstance(action, np.ndarray):
        if action.size != 1 or action.dtype.kind not in "iu":
            raise InvalidStepError(f"action of a discrete agent must be [integer], got an array of {action.size} "
                                   f"{action.dtype.str}")
        value = int(action.ravel()[0])
        if action_size is not None and not 0 <= value < action_size:
            raise InvalidStepError(f"action {value} is out of range [0, {action_size})")
    elif discrete:
        if type(action) is not list or len(action) != 1 or type(action[0]) is not int:
            raise InvalidStepError(f"action of a discrete agent must be [integer], got {action!r:.80}")
        if action_size is not None and not 0 <= action[0] < action_size:
            raise InvalidStepError(f"action {action[0]} is out of range [0, {action_size})")
    else:
        _check_field("action", action, action_size if discrete is not None else None, None)
    reward = step["reward"]
    if type(reward) is float:
        if not -MAX_MAGNITUDE <= reward <= MAX_MAGNITUDE:
            raise InvalidStepError("reward is not a finite number within float32's range")
    elif type(reward) is not int:
        raise InvalidStepError(f"reward must be a number, got {type(reward).__name__}")
    if type(step["done"]) is not bool:
        raise InvalidStepError(f"done must be true or false, got {type(step['done']).__name__}")


# -- the log's compact form ------------------------------------------------------------------------


def is_packed(data: bytes) -> bool:
    """Whether a log row's ``data`` is in the compact form (else it is orjson text of a list of steps)."""
    return data[:4] in (LOG_MAGIC, LOG_MAGIC_ZSTD)


class _DataSection:
    """The data section of a packed row or a binary page being built: each array's bytes once (an
    array object met again, as unpack_steps shares a frame between steps, is referenced, not copied)."""

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.size = 0
        self._offsets: dict[int, int] = {}  # id(array) -> offset of its bytes

    def reference(self, value: Any) -> dict[str, Any]:
        """The array reference of ``value`` (a numpy array), its bytes added when new."""
        offset = self._offsets.get(id(value))
        if offset is None:
            offset = self._offsets[id(value)] = self.size
            self.chunks.append(np.ascontiguousarray(value).data)
            self.size += value.nbytes
        return {"dtype": value.dtype.str, "shape": list(value.shape), "offset": offset, "nbytes": value.nbytes}


def pack_steps(steps: Sequence[Mapping[str, Any]], fields: Sequence[str], *, compress: bool = False) -> bytes:
    """``LOG_MAGIC``, u32 H, H bytes of JSON (the list of steps, ``fields`` only, arrays as references),
    then the arrays' bytes. An array object shared by several steps is stored once.

    With ``compress``, the whole is one zstd frame (level 1) behind ``LOG_MAGIC_ZSTD`` when that is
    at least an eighth smaller. Why: an answered batch waits for its bytes to reach the disk
    (synchronous=FULL), and on this class of machine the disk, not the CPU, bounds ingestion:
    an 8 MB row took ~330 ms to commit, while zstd's fastest level runs at over 1 GB/s on frames
    (and passes incompressible noise through about as fast).
    """
    data = _DataSection()
    header = []
    for step in steps:
        out = {}
        for key in fields:
            value = step[key]
            out[key] = data.reference(value) if isinstance(value, np.ndarray) else value
        header.append(out)
    head = orjson.dumps(header)
    packed = b"".join([LOG_MAGIC, _U32.pack(len(head)), head, *data.chunks])
    if compress and data.size >= 4096:
        import zstandard

        small = zstandard.ZstdCompressor(level=1).compress(packed)
        if len(small) <= len(packed) - len(packed) // 8:
            return LOG_MAGIC_ZSTD + small
    return packed


def binary_page(entries: Sequence[Mapping[str, Any]], nxt: int | None) -> bytes:
    """A page of the log in the binary encoding: ``WIRE_MAGIC``, u32 H, the JSON ``{"steps": entries,
    "next"}`` with each array of an entry's ``step`` as a reference, then the arrays' bytes (an array
    object shared by several steps, as unpack_steps makes them, is written once)."""
    data = _DataSection()
    out = []
    for entry in entries:
        step = dict(entry["step"])
        for key in ARRAY_FIELDS:
            value = step.get(key)
            if isinstance(value, np.ndarray):
                step[key] = data.reference(value)
        out.append({**entry, "step": step})
    head = orjson.dumps({"steps": out, "next": nxt})
    return b"".join([WIRE_MAGIC, _U32.pack(len(head)), head, *data.chunks])


def unpack_steps(data: bytes) -> list[dict[str, Any]]:
    """The steps of :func:`pack_steps` bytes, arrays as read-only numpy views of ``data``.

    The rows were checked when they were written; a damaged one raises ValueError.
    """
    if data[:4] == LOG_MAGIC_ZSTD:
        import zstandard

        # Our own row, written with its size in the frame; decompress() allocates exactly that.
        data = zstandard.ZstdDecompressor().decompress(data[4:])
    (size,) = _U32.unpack_from(data, 4)
    steps = orjson.loads(data[8:8 + size])
    section = memoryview(data)[8 + size:]
    cache: dict[tuple, np.ndarray] = {}
    for i, step in enumerate(steps):
        for key in ARRAY_FIELDS:
            value = step.get(key)
            if isinstance(value, dict):
                step[key] = resolve_ref(value, section, f"log step {i} {key}", cache)
    return steps


def step_to_json(step: Mapping[str, Any]) -> dict[str, Any]:
    """The step with each array as the flat JSON list of its values (what the JSON body would hold).

    ``tolist`` gives Python ints for integer dtypes and the exact float64 value of a float16/32
    number, which orjson writes as the shortest text that reads back to that float64, hence to the
    same float16/32: bit-exact for a reader that converts to the dtype.
    """
    return {k: (v.ravel().tolist() if isinstance(v, np.ndarray) else v) for k, v in step.items()}


def json_ready(step: Mapping[str, Any]) -> dict[str, Any]:
    """The step for ``orjson.dumps(..., option=OPT_SERIALIZE_NUMPY)``: each array flat, floats as float64.

    The same text as :func:`step_to_json` (a float16/32 widened to float64 exactly, integers as
    integers) without making a Python object per number: a page of camera frames is written at C
    speed and costs its text only.
    """
    out = {}
    for k, v in step.items():
        if isinstance(v, np.ndarray):
            v = v.reshape(-1)
            if v.dtype.kind == "f" and v.dtype.itemsize < 8:
                v = v.astype(np.float64)
        out[k] = v
    return out


def to_float32(value: Any) -> np.ndarray:
    """A flat float32 array of a list or array of numbers (what the learners take)."""
    if isinstance(value, np.ndarray):
        return value.reshape(-1).astype(np.float32)
    return np.asarray(value, dtype=np.float64).astype(np.float32)

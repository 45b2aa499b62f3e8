"""Array steps: their stored form, the binary body of ``POST /agents/{name}/steps``, and the JSON fallback.

Pure functions over bytes; numpy is touched only when the caller hands in a numpy array (this
module never imports it: a user of plain lists pays nothing for arrays existing).

**An array step in the queue** (an *item*, like the orjson bytes of a list step, which always start
with ``{``)::

    0x01 | uint32 LE H | H bytes of JSON: the step, with obs/next_obs as array references | data

An array reference is ``{"dtype": D, "shape": [...], "offset": O, "nbytes": B}`` pointing at bytes
``O..O+B`` of the item's data; D is a little-endian numpy dtype string (:data:`DTYPES`).

**The binary request body** (``application/x-agents-bar-steps``, see docs/protocol.md)::

    b"ABS1" | uint32 LE H | H bytes of JSON {"producer_id", "first_seq", "steps": [...]} | data section

where the steps' references point into the data section. Equal arrays of neighbouring steps (a
step's ``next_obs`` is usually the next step's ``obs``) share their bytes there.

A server that does not advertise the binary encoding gets :func:`json_body`: the same steps with
every array flattened to a JSON list of its values (a float32 widened to a Python float is exact,
and orjson writes the shortest text that reads back as that float, so float32 of it is bit-exact).
"""

from __future__ import annotations

import struct
import sys
from typing import Any

import orjson

from agents_bar_stream.exceptions import InvalidStepError

__all__ = [
    "BODY_MAGIC",
    "CONTENT_ENCODING_ZSTD",
    "DTYPES",
    "DTYPE_NAMES",
    "STEP_ENCODING",
    "array_item",
    "binary_body",
    "check_frame",
    "dtype_key",
    "is_array",
    "is_array_item",
    "item_to_json",
    "json_body",
    "split_item",
]

#: Content-Type of the binary body, as a server lists it in ``GET /stream/info``'s ``step_encodings``.
STEP_ENCODING = "application/x-agents-bar-steps"
#: The one content encoding the client may apply to a binary body (``content_encodings``).
CONTENT_ENCODING_ZSTD = "zstd"
BODY_MAGIC = b"ABS1"
ITEM_TAG = 1

#: Dtypes a reference may carry: numpy's little-endian dtype string -> (struct code, itemsize).
DTYPES: dict[str, tuple[str, int]] = {
    "|u1": ("B", 1), "|i1": ("b", 1), "<i2": ("h", 2), "<i4": ("i", 4), "<i8": ("q", 8),
    "<f2": ("e", 2), "<f4": ("f", 4), "<f8": ("d", 8), "|b1": ("?", 1),
}
# Dtypes whose values need a check at all: floats can be NaN or infinite, and a float64 can exceed
# float32's range. Every integer dtype here fits float32's range, so integers need none.
_FLOATS = frozenset({"<f2", "<f4", "<f8"})
_NUMBER_NAMES = "uint8, int8, int16, int32, int64, float16, float32 or float64"
#: numpy's name of each dtype string, for messages.
DTYPE_NAMES = {"|u1": "uint8", "|i1": "int8", "<i2": "int16", "<i4": "int32", "<i8": "int64", "<f2": "float16",
               "<f4": "float32", "<f8": "float64", "|b1": "bool"}
_MAX_MAGNITUDE = 3.4028234663852886e38  # protocol.MAX_MAGNITUDE (protocol imports this module)

_U32 = struct.Struct("<I")
_ITEM_HEAD = struct.Struct("<BI")


def is_array(value: Any) -> bool:
    """Whether ``value`` is a numpy array, told without importing numpy (not imported: it cannot be one)."""
    np = sys.modules.get("numpy")
    return np is not None and type(value) is np.ndarray


def is_array_item(item: bytes) -> bool:
    """Whether a queued item is an array step (else it is a list step's JSON)."""
    return item[:1] == b"\x01"


def dtype_key(name: str, a: Any) -> str:
    """The little-endian dtype string of a numpy array of numbers; InvalidStepError for other dtypes."""
    dt = a.dtype
    key = dt.str
    if key in DTYPES and key != "|b1":
        return key
    if dt.kind == "b":
        raise InvalidStepError(f"{name} is a bool array; observations are numbers: convert it (e.g. .astype('uint8'))")
    if dt.byteorder == ">" and dt.newbyteorder("<").str in DTYPES:
        return str(dt.newbyteorder("<").str)  # big-endian: swapped to little-endian when copied
    raise InvalidStepError(f"{name} has dtype {dt}, which steps do not carry; use {_NUMBER_NAMES}")


def check_frame(name: str, a: Any) -> str:
    """Check an observation array at C speed; returns its dtype string. No per-element Python loop."""
    key = dtype_key(name, a)
    if a.size == 0:
        raise InvalidStepError(f"{name} must not be empty")
    if key in _FLOATS:
        # min() and max() propagate NaN, and a NaN compares false: one test per end covers NaN, the
        # infinities and (for float64) values beyond float32's range, without a temporary array.
        # As Python floats: numpy would compare a float16 with the bound cast to float16 (infinity).
        low, high = float(a.min()), float(a.max())
        if not (-_MAX_MAGNITUDE <= low and high <= _MAX_MAGNITUDE):
            raise InvalidStepError(_bad_float(name, a))
    return key


def _bad_float(name: str, a: Any) -> str:
    np = sys.modules["numpy"]
    flat = a.ravel()
    nan = np.isnan(flat)
    if nan.any():
        return f"{name}[{int(nan.argmax())}] (flat index) is not a number (NaN)"
    bad = ~(np.abs(flat.astype("<f8")) <= _MAX_MAGNITUDE)
    i = int(bad.argmax())
    return (f"{name}[{i}] (flat index) is out of range ({float(flat[i]):.6g}): numbers must be finite and at "
            f"most {_MAX_MAGNITUDE:.4g} in magnitude (float32)")


def _contiguous(a: Any, key: str) -> Any:
    """A buffer of ``a``'s elements in C order and little-endian (a copy only when ``a`` is neither)."""
    if a.dtype.str != key:
        return a.astype(key, order="C")  # big-endian in, little-endian out
    if not a.flags.c_contiguous:
        return sys.modules["numpy"].ascontiguousarray(a)
    return a


def array_item(obs: Any, next_obs: Any, key: str, action: list, reward: float, done: bool,
               policy_version: str | None = None) -> bytes:
    """The queued bytes of an array step (both observations already checked, of dtype ``key``).

    One copy of each array's bytes (``bytes.join`` reads the arrays' buffers directly): the caller
    may reuse its arrays as soon as step() returns.
    """
    nbytes = obs.nbytes
    shape = list(obs.shape)
    step: dict[str, Any] = {
        "obs": {"dtype": key, "shape": shape, "offset": 0, "nbytes": nbytes},
        "action": action, "reward": reward,
        "next_obs": {"dtype": key, "shape": shape, "offset": nbytes, "nbytes": nbytes},
        "done": done,
    }
    if policy_version is not None:
        step["policy_version"] = policy_version
    head = orjson.dumps(step)
    return b"".join((_ITEM_HEAD.pack(ITEM_TAG, len(head)), head, _contiguous(obs, key), _contiguous(next_obs, key)))


def split_item(item: bytes) -> tuple[dict[str, Any], memoryview]:
    """The step of an array item (references into its data) and that data; ValueError when malformed."""
    if len(item) < _ITEM_HEAD.size or item[0] != ITEM_TAG:
        raise ValueError("not an array step")
    _tag, size = _ITEM_HEAD.unpack_from(item)
    end = _ITEM_HEAD.size + size
    if end > len(item):
        raise ValueError("the header of an array step runs past its end")
    step = orjson.loads(memoryview(item)[_ITEM_HEAD.size:end])
    data = memoryview(item)[end:]
    if type(step) is not dict:
        raise ValueError("the header of an array step is not an object")
    for key, ref in step.items():
        if type(ref) is dict:
            _check_ref(key, ref, len(data))
    return step, data


def _check_ref(key: str, ref: dict[str, Any], size: int) -> None:
    dtype, shape, offset, nbytes = ref.get("dtype"), ref.get("shape"), ref.get("offset"), ref.get("nbytes")
    if dtype not in DTYPES or type(shape) is not list or type(offset) is not int or type(nbytes) is not int:
        raise ValueError(f"{key}: a malformed array reference")
    count = 1
    for n in shape:
        if type(n) is not int or n < 0:
            raise ValueError(f"{key}: a malformed shape {shape}")
        count *= n
    if nbytes != count * DTYPES[dtype][1] or offset < 0 or offset + nbytes > size:
        raise ValueError(f"{key}: the reference does not fit the data ({offset}+{nbytes} of {size} bytes)")


def _values(ref: dict[str, Any], data: memoryview) -> tuple:
    """A reference's elements in C order, as Python numbers (struct's C loop, no numpy needed)."""
    code, size = DTYPES[ref["dtype"]]
    return struct.unpack_from(f"<{ref['nbytes'] // size}{code}", data, ref["offset"])


def item_to_json(item: bytes) -> bytes:
    """A queued item as a list step's JSON: arrays flattened to lists of the same values."""
    if not is_array_item(item):
        return item
    step, data = split_item(item)
    for key, ref in step.items():
        if type(ref) is dict:
            step[key] = _values(ref, data)
    return orjson.dumps(step)


def json_body(producer_id: str, first_seq: int, items: list[bytes]) -> bytes:
    """Today's JSON body of ``/steps``; array steps are flattened (:func:`item_to_json`)."""
    head = b'{"producer_id":"%s","first_seq":%d,"steps":[' % (producer_id.encode(), first_seq)
    steps = b",".join(items)
    # orjson escapes every control character, so a byte 0x01 in the joined steps can only be the tag
    # of an array step: one scan at C speed clears a batch of list steps (the usual case) as it is.
    if steps.find(b"\x01") >= 0:
        steps = b",".join([item_to_json(i) for i in items])
    return head + steps + b"]}"


def binary_body(producer_id: str, first_seq: int, items: list[bytes]) -> bytes:
    """The ``application/x-agents-bar-steps`` body of these items (uncompressed).

    An array equal to one of the previous step's (its ``next_obs`` is this step's ``obs``) is not
    written twice: both references point at the same bytes.
    """
    steps: list[Any] = []
    chunks: list[bytes] = []
    pos = 0
    previous: list[tuple[bytes, dict[str, Any]]] = []  # the last array step's arrays and their references
    for item in items:
        if not is_array_item(item):
            steps.append(orjson.Fragment(item))
            previous = []
            continue
        step, data = split_item(item)
        current: list[tuple[bytes, dict[str, Any]]] = []
        for key, ref in step.items():
            if type(ref) is not dict:
                continue
            blob = bytes(data[ref["offset"]:ref["offset"] + ref["nbytes"]])
            new = None
            for old_blob, old_ref in (*previous, *current):
                if old_ref["dtype"] == ref["dtype"] and old_blob == blob:  # bytes ==: one memcmp
                    new = {"dtype": ref["dtype"], "shape": ref["shape"], "offset": old_ref["offset"],
                           "nbytes": ref["nbytes"]}
                    break
            if new is None:
                new = {"dtype": ref["dtype"], "shape": ref["shape"], "offset": pos, "nbytes": ref["nbytes"]}
                chunks.append(blob)
                pos += len(blob)
            step[key] = new
            current.append((blob, new))
        previous = current
        steps.append(step)
    head = orjson.dumps({"producer_id": producer_id, "first_seq": first_seq, "steps": steps})
    return b"".join((BODY_MAGIC, _U32.pack(len(head)), head, *chunks))

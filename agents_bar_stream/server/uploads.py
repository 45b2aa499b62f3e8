"""Check an uploaded snapshot in a child process: ``python -m agents_bar_stream.server.uploads``.

A snapshot body can be 64 MiB of JSON with base64 inside; parsing and decoding it takes a few
hundred ms of pure CPU that holds the GIL (orjson, base64), so even on a worker thread it stalls
the event loop and every other request for that long (issue 9: a 58.8 MiB upload pushed
``/stream/info`` to 603 ms, three at once to 1.8 s and 1.45 GiB). Here the body, already spooled
to a file, is parsed by a short-lived process of its own: the server's GIL and heap never see it,
and all the memory it took is returned when the process exits.

The child reads only the standard library, orjson and :mod:`agents_bar_stream.protocol` (no
torch, no fastapi). It prints one JSON line: ``{"ok": true, "network": bool}`` (the decoded
network, if any, written to the output path), or ``{"status": 4xx, "detail": ..., "extra": {...}}``.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from typing import Any

import orjson

from agents_bar_stream.exceptions import InvalidStepError
from agents_bar_stream.protocol import validate_step

__all__ = ["BUFFER_FORMAT", "SNAPSHOT_FIELDS", "check_snapshot"]

BUFFER_FORMAT = "agents-bar-stream/steps-v1"
_TORCH_ZIP_MAGIC = b"PK\x03\x04"  # the same check as learner.decode_network, before the server reads the bytes
SNAPSHOT_FIELDS = ("model", "obs_size", "action_size", "encoded_config", "encoded_network", "encoded_buffer")


class _Refused(Exception):
    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


def _b64decode(field: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Refused(f"{field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(f"{field} is not valid base64") from None


def check_snapshot(body: bytes, *, model: str, obs_size: int, action_size: int, discrete: bool) -> bytes:
    """The decoded network bytes of a valid snapshot body (empty when it carries none).

    Raises ``_Refused`` (a 422) when the body is not a snapshot of this agent. Every part is JSON
    or base64: nothing is unpickled (the network bytes are read by torch with ``weights_only``
    later, in the server).
    """
    if not body:
        raise _Refused("the request body is empty; a JSON value is expected")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Refused(f"the request body is not valid JSON: {exc}") from None
    del body
    if not isinstance(doc, dict) or any(k not in doc for k in SNAPSHOT_FIELDS):
        raise _Refused(f"a snapshot is an object with {', '.join(SNAPSHOT_FIELDS)}")
    if not isinstance(doc["model"], str) or doc["model"].lower() != model:
        raise _Refused(f"snapshot model {doc['model']!r:.100} does not match the agent's ({model})")
    for key, want in (("obs_size", obs_size), ("action_size", action_size)):
        if doc[key] != want or type(doc[key]) is not int:
            raise _Refused(f"snapshot {key} {doc[key]!r:.100} does not match the agent's ({want})")
    config_bytes = _b64decode("encoded_config", doc["encoded_config"])
    network = _b64decode("encoded_network", doc["encoded_network"])
    buffer_bytes = _b64decode("encoded_buffer", doc["encoded_buffer"])
    del doc
    if network and not network.startswith(_TORCH_ZIP_MAGIC):
        raise _Refused("encoded_network is not a torch.save() zip archive (pickles are refused)")
    if config_bytes:
        try:
            config = orjson.loads(config_bytes)
        except orjson.JSONDecodeError:
            raise _Refused("encoded_config must be base64 of a JSON object (pickles are refused)") from None
        if not isinstance(config, dict):
            raise _Refused("encoded_config must be base64 of a JSON object")
    if buffer_bytes:
        try:
            buffer = orjson.loads(buffer_bytes)
        except orjson.JSONDecodeError:
            raise _Refused("encoded_buffer must be base64 of JSON (pickles are refused)") from None
        steps = buffer.get("steps") if isinstance(buffer, dict) else None
        if not isinstance(steps, list):
            raise _Refused(f'encoded_buffer must be JSON {{"format": "{BUFFER_FORMAT}", "steps": [...]}}')
        for i, step in enumerate(steps):
            try:
                validate_step(step, obs_size=obs_size, action_size=action_size, discrete=discrete)
            except InvalidStepError as exc:
                raise _Refused(f"encoded_buffer step {i} is invalid: {exc}", index=i) from None
    return network


def main(argv: list[str]) -> int:
    """``uploads BODY_PATH NETWORK_OUT_PATH MODEL OBS_SIZE ACTION_SIZE DISCRETE(0|1)``."""
    body_path, out_path, model, obs_size, action_size, discrete = argv
    with open(body_path, "rb") as fh:
        body = fh.read()
    try:
        network = check_snapshot(body, model=model, obs_size=int(obs_size), action_size=int(action_size),
                                 discrete=discrete == "1")
    except _Refused as exc:
        result: dict[str, Any] = {"status": 422, "detail": exc.detail, "extra": exc.extra}
    else:
        if network:
            fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(network)
        result = {"ok": True, "network": bool(network)}
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

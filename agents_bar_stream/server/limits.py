"""The limits on what one request may cost, in one place (docs/security.md lists them).

The ``DEFAULT_*`` values are the defaults of the ``serve`` options (``runner.add_arguments``
repeats them so that the command line parser stays light); the others are fixed.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_STEPS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TOKEN_TTL",
    "DRAIN_LIMIT",
    "LOGIN_HASH_WORKERS",
    "MAX_AGENTS_PER_USER",
    "MAX_LOGIN_BODY",
    "MAX_LOGINS_WAITING",
    "MAX_JSON_NUMBER_BYTES",
    "MAX_LOG_NUMBERS",
    "MAX_LOG_PAGE",
    "MAX_SMALL_BODY",
    "MAX_UPLOADS_AT_ONCE",
    "SNAPSHOT_BUFFER_STEPS",
    "UPLOAD_CHECK_TIMEOUT",
]

DEFAULT_MAX_BATCH_STEPS = 10_000
DEFAULT_MAX_BATCH_BYTES = 8 * 2**20  # 8 MiB
DEFAULT_MAX_BODY_BYTES = 64 * 2**20  # any other body (snapshots are the big ones)
DEFAULT_TOKEN_TTL = 24 * 3600.0  # seconds
MAX_SMALL_BODY = 1 * 2**20  # create, act, step
MAX_LOGIN_BODY = 64 * 1024  # a login form
MAX_LOG_PAGE = 10_000
# Numbers (obs, next_obs, action, reward, done) on one page of GET /agents/{name}/steps and in a
# snapshot's buffer: 70 steps of an 84x84x4 frame, the whole 10,000 of small ones. A page of
# camera frames as JSON is ~20 bytes a number; this keeps one answer to ~40 MB.
MAX_LOG_NUMBERS = 2_000_000
# The longest text of one JSON number (orjson writes "-1.2345678901234567e-300", Python's json
# adds a space after the comma): bodies that carry observations are allowed this much per number.
MAX_JSON_NUMBER_BYTES = 26
MAX_AGENTS_PER_USER = 100  # each agent holds a network, a replay buffer and a learner thread
SNAPSHOT_BUFFER_STEPS = 1000  # the most recent steps a snapshot carries as its buffer
# Password hashing (scrypt: ~16 MiB and tens of ms of a core each) runs on its own thread, one
# hash at a time, with at most this many logins queued for it: a flood of logins (issue 9: 30-40
# threads grew the server to 1.2 GiB, one scrypt buffer per request thread, and took the CPU
# from ingestion) costs one core and one buffer at most. The rest are answered 429 at once.
LOGIN_HASH_WORKERS = 1
MAX_LOGINS_WAITING = 16
# Snapshot uploads spooled and checked at once (each check is a child process, uploads.py), and
# how long a check may take.
MAX_UPLOADS_AT_ONCE = 2
UPLOAD_CHECK_TIMEOUT = 120.0
# Bodies over the limit are still read (and dropped) up to this many bytes before answering 413:
# a client that is still sending when the server closes the connection sees a reset instead of
# the 413 that tells it to split the batch.
DRAIN_LIMIT = 256 * 2**20

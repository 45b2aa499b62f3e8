"""Passwords and access tokens, with the standard library only.

- Passwords are stored as ``scrypt$n$r$p$<salt>$<hash>`` (a random 16-byte salt per password),
  and compared in constant time.
- An access token is ``<payload>.<signature>``: the payload is base64url JSON
  ``{"sub": username, "exp": unix_time}``, the signature an HMAC-SHA256 of it with a secret that
  lives in the data directory (``secret.key``, mode 0600). Tokens expire; restarting the server
  on the same data directory keeps them valid, a new data directory invalidates them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path

__all__ = [
    "LoginLimiter",
    "TokenSigner",
    "hash_password",
    "load_or_create_secret",
    "secure_data_dir",
    "verify_password",
]

logger = logging.getLogger(__name__)

# scrypt cost: about 30 ms and 16 MiB per login on a small machine. Logins are rare (one per
# client process), so the cost only slows down password guessing.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_SECRET_FILE = "secret.key"


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, self-describing so that the cost can change later."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64e(salt)}${_b64e(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a :func:`hash_password` result); never raises."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _b64d(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=_b64d(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The signing key of ``data_dir``, created (32 random bytes, file mode 0600) on first use."""
    path = Path(data_dir) / _SECRET_FILE
    try:
        # O_EXCL: two servers started at once on a fresh directory must not overwrite each
        # other's key; the loser reads the winner's.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise RuntimeError(
                f"{path} is damaged (shorter than 32 bytes); delete it to invalidate all tokens"
            ) from None
        return key
    key = secrets.token_bytes(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def secure_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` the owner's alone: the directory and its subdirectories 0700, its files 0600.

    The database holds the password hashes and every agent's data. A directory that existed
    before the server started (a helper, a test or ``mkdir`` made it, with the usual umask 022)
    kept its files readable by everyone; so whatever was there is tightened at every start, and
    a warning says that it was open. Only entries that this user owns are changed; symlinks are
    left alone (never followed).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    loose = []
    for path in [data_dir, *_walk(data_dir)]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # removed meanwhile (a WAL checkpoint, a temp file)
            continue
        if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
            continue
        wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) & 0o077:
            loose.append(f"{path.name or path} ({stat.S_IMODE(st.st_mode):o})")
            os.chmod(path, stat.S_IMODE(st.st_mode) & wanted)
    if loose:
        listed = ", ".join(loose[:10]) + (" ..." if len(loose) > 10 else "")
        logger.warning("the data directory %s was readable by other users: %s; made it the owner's only "
                       "(directories 0700, files 0600)", data_dir, listed)


def _walk(root: Path, *, limit: int = 100_000):
    """Every entry under ``root`` (not following symlinks), at most ``limit`` of them."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            seen += 1
            if seen > limit:
                return
            yield Path(dirpath) / name


class TokenSigner:
    """Issues and checks HMAC-signed access tokens that expire after ``ttl`` seconds."""

    def __init__(self, key: bytes, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("token ttl must be positive")
        self._key = key
        self.ttl = ttl

    def _sign(self, payload: str) -> str:
        return _b64e(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, username: str, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        body = json.dumps({"sub": username, "exp": int(now + self.ttl)}, separators=(",", ":"))
        payload = _b64e(body.encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, *, now: float | None = None) -> str | None:
        """The username the token was issued to, or ``None`` when it is malformed, forged or expired."""
        payload, sep, signature = token.partition(".")
        if not sep or not payload.isascii() or not signature.isascii():
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            claims = json.loads(_b64d(payload))
            username, expires = claims["sub"], claims["exp"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(username, str) or not isinstance(expires, int):
            return None
        if (time.time() if now is None else now) >= expires:
            return None
        return username


class _Buckets:
    """Token buckets by key (``capacity`` tokens, one back every ``refill`` seconds), at most ``max_keys`` kept.

    A full bucket carries no information, so it is dropped; when too many keys are kept, the
    least recently charged go first (a spray of made-up user names cannot grow memory).
    """

    def __init__(self, capacity: int, refill: float, max_keys: int = 10_000) -> None:
        self.capacity = capacity
        self.refill = refill
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) / self.refill)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token (0: it has one now)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) * self.refill

    def take(self, key: str, now: float) -> None:
        self._buckets[key] = (self._tokens(key, now) - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def give_back(self, key: str, now: float) -> None:
        tokens = self._tokens(key, now) + 1
        if tokens >= self.capacity:
            self._buckets.pop(key, None)
        else:
            self._buckets[key] = (tokens, now)


class LoginLimiter:
    """Failed logins allowed per account and per client address, as token buckets.

    A login attempt takes a token from both buckets *before* its password is hashed (so that
    concurrent attempts cannot all slip through), and a successful one gives both back: only
    failures count. An attempt without a token in either bucket is refused with the seconds to
    wait, and costs nothing (no hashing). Thread-safe.
    """

    # Defaults: 20 failures in a row per account, then one every 3 s (20 a minute); 60 per client
    # address, then one a second. A person who mistypes is never stopped; a guesser gets ~1 try/s.
    def __init__(self, *, per_account: int = 20, account_refill: float = 3.0,
                 per_address: int = 60, address_refill: float = 1.0) -> None:
        self._accounts = _Buckets(per_account, account_refill)
        self._addresses = _Buckets(per_address, address_refill)
        self._lock = threading.Lock()

    def try_acquire(self, account: str, address: str, *, now: float | None = None) -> float:
        """0 and a token taken from both buckets, or the seconds to wait (nothing taken)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = max(self._accounts.wait(account, now), self._addresses.wait(address, now))
            if wait > 0:
                return wait
            self._accounts.take(account, now)
            self._addresses.take(address, now)
            return 0.0

    def release(self, account: str, address: str, *, now: float | None = None) -> None:
        """Give back the tokens of an attempt that succeeded (or was never judged)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._accounts.give_back(account, now)
            self._addresses.give_back(address, now)

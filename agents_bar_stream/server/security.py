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
import os
import logging
import secrets
import stat
import time
from pathlib import Path

__all__ = ["TokenSigner", "hash_password", "load_or_create_secret", "secure_data_dir", "verify_password"]

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
            raise RuntimeError(f"{path} is damaged (shorter than 32 bytes); delete it to invalidate all tokens") from None
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
        logger.warning("the data directory %s was readable by other users: %s; made it the owner's only "
                       "(directories 0700, files 0600)", data_dir, ", ".join(loose[:10]) + (" ..." if len(loose) > 10 else ""))


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

"""htpasswd lines for Traefik's basicAuth middleware, in pure Python (no bcrypt needed).

Format: Apache's `$apr1$` (MD5-crypt, 1000 rounds), which Traefik accepts like `htpasswd -m`.
MD5-crypt is a fast hash, so it would be weak for a human-chosen password; here the password is
`secrets.token_urlsafe(32)` (256 random bits), which no offline guessing can reach, and the line
lives only in a Kubernetes Secret. bcrypt would need a compiled dependency for no real gain.
"""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MAGIC = b"$apr1$"


def _to64(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(chars)


def apr1(password: str, salt: str | None = None) -> str:
    """The `$apr1$salt$hash` of PASSWORD (salt: up to 8 characters of ./0-9A-Za-z)."""
    salt = (salt or "".join(secrets.choice(_ALPHABET) for _ in range(8)))[:8]
    pw, sb = password.encode(), salt.encode()
    ctx = hashlib.md5(pw + _MAGIC + sb, usedforsecurity=False)
    alternate = hashlib.md5(pw + sb + pw, usedforsecurity=False).digest()
    for remaining in range(len(pw), 0, -16):
        ctx.update(alternate[: min(16, remaining)])
    bits = len(pw)
    while bits:
        ctx.update(b"\x00" if bits & 1 else pw[:1])
        bits >>= 1
    digest = ctx.digest()
    for i in range(1000):
        round_ctx = hashlib.md5(usedforsecurity=False)
        round_ctx.update(pw if i & 1 else digest)
        if i % 3:
            round_ctx.update(sb)
        if i % 7:
            round_ctx.update(pw)
        round_ctx.update(digest if i & 1 else pw)
        digest = round_ctx.digest()
    encoded = "".join(
        _to64(digest[a] << 16 | digest[b] << 8 | digest[c], 4)
        for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    )
    encoded += _to64(digest[11], 2)
    return f"$apr1${salt}${encoded}"


def htpasswd_line(user: str, password: str, salt: str | None = None) -> str:
    """One `user:$apr1$...` line, as Traefik's basicAuth `users` secret key expects."""
    if not user or ":" in user:
        raise ValueError("htpasswd user names must be non-empty and contain no ':'")
    return f"{user}:{apr1(password, salt)}"

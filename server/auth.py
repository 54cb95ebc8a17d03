"""Users of the NETCONF server: password hashes (scrypt, salted) and authorised public keys.

Format of a stored hash: `scrypt$<log2 N>$<r>$<p>$<salt b64>$<key b64>`, verified in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

_N_LOG2, _R, _P = 14, 8, 1


def hash_password(password: str, *, n_log2: int = _N_LOG2) -> str:
    """A fresh salted scrypt hash for storing in the bootstrap file."""
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=1 << n_log2, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n_log2}${_R}${_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n_log2, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=1 << int(n_log2),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class User:
    """One NETCONF user: a password hash and/or OpenSSH authorized_keys lines, plus NACM groups."""

    name: str
    password_hash: str | None = None
    authorized_keys: tuple[str, ...] = ()
    groups: frozenset[str] = field(default_factory=frozenset)

"""Mobility security associations and authenticators (RFC 5944 §3.5, §5.1).

An authenticator covers the UDP payload from the Type byte up to and including the SPI of the
authentication extension itself: every earlier extension, this extension's Type and Length, never
the authenticator bytes nor the IP/UDP headers.  So a Foreign-Home extension also covers the
Mobile-Home one.  Two algorithms:

* ``hmac-md5`` — ``HMAC-MD5(key, covered)``, the default since RFC 3220;
* ``keyed-md5-prefix-suffix`` — ``MD5(key | covered | key)``, RFC 2002's default, still deployed.

Comparison is constant-time.  Keys are arbitrary binary strings (128 bits and longer MUST work).

Speed: a :class:`SecurityAssociation` keeps the MD5 states its key determines (HMAC's inner and
outer pads, or keyed-MD5's key prefix), computed once when the association is built.  An
authenticator then costs two state copies and two small updates — about 2.5 times less than
``hmac.digest`` re-deriving the pads for every message (``bench/registration_protocol.py``).  The
states are CPython's built-in MD5 (``_md5``) when the interpreter has it: copying one is a plain
memory copy, where an OpenSSL context copy allocates, which makes an authenticator ~1.6 times
cheaper again (same digests; ``hashlib.md5`` is the fallback).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from .constants import MIN_CONFIGURABLE_SPI, AuthAlgorithm, ReplayProtection
from .messages import AuthenticationExtension, GeneralizedAuth

#: Bytes after an extension's first byte that the authenticator still covers: Length(1) + SPI(4).
_SHORT_HEADER_COVERED = 1 + 1 + 4
#: Same for the long format (type 36): Subtype(1) + Length(2) + SPI(4).
_LONG_HEADER_COVERED = 1 + 1 + 2 + 4
#: The MIP-MIB key is 16 octets; shorter keys make MD5 authenticators guessable.
MIN_KEY_LENGTH = 16
try:
    from _md5 import md5 as _md5_state
except ImportError:  # an interpreter built without its own hash implementations
    _md5_state = hashlib.md5

#: MD5's block size: HMAC keys are padded to it, longer keys are hashed first (RFC 2104 §2).
_MD5_BLOCK = 64
_TO_IPAD = bytes.maketrans(bytes(range(256)), bytes(b ^ 0x36 for b in range(256)))
_TO_OPAD = bytes.maketrans(bytes(range(256)), bytes(b ^ 0x5C for b in range(256)))


def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """MD5 states after absorbing ``key XOR ipad`` and ``key XOR opad`` (RFC 2104)."""
    if len(key) > _MD5_BLOCK:
        key = hashlib.md5(key).digest()
    key = key.ljust(_MD5_BLOCK, b"\0")
    return _md5_state(key.translate(_TO_IPAD)), _md5_state(key.translate(_TO_OPAD))


@dataclass(frozen=True, slots=True)
class SecurityAssociation:
    """One mobility security association: what an SPI names (YANG ``security-association``)."""

    spi: int
    key: bytes = field(repr=False)
    algorithm: AuthAlgorithm = AuthAlgorithm.HMAC_MD5
    replay_protection: ReplayProtection = ReplayProtection.TIMESTAMP
    # MD5 states derived from the key (see the module docstring): HMAC's inner and outer pads, or
    # keyed-MD5's key prefix (then ``_outer`` is None).
    _inner: hashlib._Hash | None = field(init=False, repr=False, compare=False)
    _outer: hashlib._Hash | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not MIN_CONFIGURABLE_SPI <= self.spi <= 0xFFFFFFFF:
            raise ValueError(f"SPI {self.spi} is reserved or out of range (256..4294967295)")
        if not isinstance(self.key, bytes) or len(self.key) < MIN_KEY_LENGTH:
            raise ValueError(f"a security association key must be at least {MIN_KEY_LENGTH} bytes")
        if (
            type(self.algorithm) is not AuthAlgorithm
        ):  # members as they are: 100k nodes are configured at once
            object.__setattr__(self, "algorithm", AuthAlgorithm(self.algorithm))
        if type(self.replay_protection) is not ReplayProtection:
            object.__setattr__(self, "replay_protection", ReplayProtection(self.replay_protection))
        # derived at the first authenticator: 256 bytes an association that nothing authenticates
        # with (most of 100k configured mobile nodes at any time) does not hold
        object.__setattr__(self, "_inner", None)
        object.__setattr__(self, "_outer", None)

    def _derive(self) -> hashlib._Hash:
        if self.algorithm is AuthAlgorithm.HMAC_MD5:
            inner, outer = _hmac_pads(self.key)
        else:
            inner, outer = _md5_state(self.key), None
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_outer", outer)
        return inner

    def __reduce__(self) -> tuple[type[SecurityAssociation], tuple[int, bytes, str, str]]:
        """Copy and pickle by the configured values; the MD5 states (not picklable) are derived again."""
        return SecurityAssociation, (self.spi, self.key, self.algorithm, self.replay_protection)

    def authenticator(self, covered: bytes | bytearray | memoryview) -> bytes:
        """The 16-byte authenticator of ``covered`` under this association's key and algorithm."""
        inner = self._inner
        inner = (inner if inner is not None else self._derive()).copy()
        inner.update(covered)
        outer = self._outer
        if outer is None:  # keyed-MD5 prefix+suffix: MD5(key | covered | key)
            inner.update(self.key)
            return inner.digest()
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def compute_authenticator(algorithm: AuthAlgorithm, key: bytes, covered: bytes) -> bytes:
    """The 16-byte authenticator of ``covered`` under ``key``."""
    if algorithm is AuthAlgorithm.HMAC_MD5:
        return hmac.new(key, covered, hashlib.md5).digest()
    if algorithm is AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX:
        return hashlib.md5(key + covered + key).digest()
    raise ValueError(f"unknown authentication algorithm {algorithm!r}")


def covered_length(extension: AuthenticationExtension | GeneralizedAuth) -> int:
    """How many bytes of the received datagram the extension's authenticator covers."""
    if extension.offset < 0:
        raise ValueError("the extension was not parsed from a datagram (no offset)")
    header = _LONG_HEADER_COVERED if isinstance(extension, GeneralizedAuth) else _SHORT_HEADER_COVERED
    return extension.offset + header


def verify(raw: bytes, extension: AuthenticationExtension, sa: SecurityAssociation) -> bool:
    """Check a parsed 32/33/34 extension against ``sa``; False also for a SPI that is not ``sa``'s."""
    offset = extension.offset
    if extension.spi != sa.spi or offset < 0:
        return False
    # covered_length(), inlined: this runs for every request
    end = offset + (_LONG_HEADER_COVERED if type(extension) is GeneralizedAuth else _SHORT_HEADER_COVERED)
    if end > len(raw):
        return False
    return hmac.compare_digest(sa.authenticator(raw[:end]), extension.authenticator)

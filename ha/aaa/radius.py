"""RADIUS bytes (RFC 2865, 2866, 3579, 5176, 2868), sans-I/O: build requests, check and read answers.

Only what a home agent needs, written against the RFCs rather than through a dictionary file: the
attributes are few and fixed, a request is built in a few microseconds, and every authenticator rule
sits in one screen of code where it can be read against its RFC section.  (pyrad, which the tests use as
an independent peer, needs a dictionary file and a ``Packet`` object per message.)

Authenticators:

* Access-Request: a random Request Authenticator (RFC 2865 §3) and always a Message-Authenticator,
  HMAC-MD5 over the whole packet with the attribute zeroed (RFC 3579 §3.2).
* Accounting-Request, Disconnect-Request: MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret)
  (RFC 2866 §3, RFC 5176 §2.3).
* Answers: Response Authenticator = MD5(Code+Identifier+Length+Request Authenticator+Attributes+Secret)
  (RFC 2865 §3); an Access-Accept/Reject must also carry a valid Message-Authenticator computed with the
  Request Authenticator in place (RFC 3579 §3.2; required since BlastRADIUS, CVE-2024-3596).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address

HEADER = struct.Struct("!BBH16s")
MAX_PACKET = 4096
_U32 = struct.Struct("!I")


class Code(IntEnum):
    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    STATUS_SERVER = 12  # RFC 5997
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43  # RFC 5176
    COA_ACK = 44
    COA_NAK = 45


class Attr(IntEnum):
    USER_NAME = 1
    USER_PASSWORD = 2
    CHAP_PASSWORD = 3
    NAS_IP_ADDRESS = 4
    SERVICE_TYPE = 6
    FRAMED_IP_ADDRESS = 8
    REPLY_MESSAGE = 18
    STATE = 24
    CLASS = 25
    VENDOR_SPECIFIC = 26
    SESSION_TIMEOUT = 27
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    ACCT_STATUS_TYPE = 40
    ACCT_DELAY_TIME = 41
    ACCT_SESSION_ID = 44
    ACCT_AUTHENTIC = 45
    ACCT_SESSION_TIME = 46
    ACCT_TERMINATE_CAUSE = 49
    EVENT_TIMESTAMP = 55
    CHAP_CHALLENGE = 60
    NAS_PORT_TYPE = 61
    MESSAGE_AUTHENTICATOR = 80
    FRAMED_POOL = 88
    ERROR_CAUSE = 101


class AcctStatus(IntEnum):
    START = 1
    STOP = 2
    INTERIM_UPDATE = 3


class TerminateCause(IntEnum):
    """RFC 2866 §5.10 values used for the Stop of a binding."""

    USER_REQUEST = 1  # deregistration
    IDLE_TIMEOUT = 4
    SESSION_TIMEOUT = 5  # lifetime expired
    ADMIN_RESET = 6  # clear-bindings, Disconnect-Request
    NAS_REQUEST = 10  # replaced
    NAS_REBOOT = 11


class ErrorCause(IntEnum):
    """RFC 5176 §3.5 Error-Cause values of a Disconnect-NAK or CoA-NAK."""

    MISSING_ATTRIBUTE = 402
    NAS_IDENTIFICATION_MISMATCH = 403
    INVALID_REQUEST = 404
    UNSUPPORTED_EXTENSION = 406  # "lack of support for an extension such as Disconnect and/or CoA"
    SESSION_CONTEXT_NOT_FOUND = 503


VENDOR_JUNIPER_ERX = 4874
VENDOR_3GPP2 = 5535
ERX_MOBILE_IP_ALGORITHM = 84
ERX_MOBILE_IP_SPI = 85
ERX_MOBILE_IP_KEY = 86
ERX_MOBILE_IP_LIFETIME = 89
TGPP2_MN_HA_SPI = 57
TGPP2_MN_HA_SHARED_KEY = 58

_ZERO16 = bytes(16)
_MA = int(Attr.MESSAGE_AUTHENTICATOR)
_MA_TYPE = bytes((_MA, 18))
_MA_PLACEHOLDER = _MA_TYPE + _ZERO16


class RadiusError(ValueError):
    """A datagram that is not a well-formed RADIUS packet."""


@dataclass(slots=True)
class Packet:
    """A parsed RADIUS packet; ``attributes`` in wire order as ``(type, value)``; ``raw`` the datagram."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""
    #: Where the Message-Authenticator's value starts in ``raw``: -1 none, -2 malformed (not 16
    #: octets, or more than one: RFC 3579 §3.2 allows one).
    message_authenticator: int = -1

    def get(self, kind: int) -> bytes | None:
        for t, value in self.attributes:
            if t == kind:
                return value
        return None

    def vendor(self, vendor_id: int) -> list[tuple[int, bytes]]:
        """Sub-attributes of the Vendor-Specific attributes of ``vendor_id`` (RFC 2865 §5.26 format)."""
        out: list[tuple[int, bytes]] = []
        for t, value in self.attributes:
            if t != Attr.VENDOR_SPECIFIC or len(value) < 6 or _U32.unpack_from(value)[0] != vendor_id:
                continue
            i = 4
            while i + 2 <= len(value):
                sub, length = value[i], value[i + 1]
                if length < 2 or i + length > len(value):
                    break  # a malformed VSA ends here; what came before stands
                out.append((sub, value[i + 2 : i + length]))
                i += length
        return out


def attribute(kind: int, value: bytes) -> bytes:
    if len(value) > 253:
        raise ValueError(f"attribute {kind} value of {len(value)} bytes exceeds 253")
    return bytes((kind, len(value) + 2)) + value


def vsa(vendor_id: int, sub: int, value: bytes) -> bytes:
    return attribute(Attr.VENDOR_SPECIFIC, _U32.pack(vendor_id) + bytes((sub, len(value) + 2)) + value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def address(value: IPv4Address) -> bytes:
    return value.packed


def parse(data: bytes) -> Packet:
    """Parse one datagram (RFC 2865 §3: the Length field rules; octets past it are padding)."""
    if len(data) < HEADER.size:
        raise RadiusError("shorter than a RADIUS header")
    code, identifier, length, authenticator = HEADER.unpack_from(data)
    if length < HEADER.size or length > MAX_PACKET or length > len(data):
        raise RadiusError(f"bad Length {length} for a {len(data)}-byte datagram")
    data = bytes(data[:length])
    attributes: list[tuple[int, bytes]] = []
    append = attributes.append
    ma = -1
    i = HEADER.size
    while i < length:
        if i + 2 > length:
            raise RadiusError("truncated attribute header")
        kind, alen = data[i], data[i + 1]
        if alen < 2 or i + alen > length:
            raise RadiusError(f"attribute {kind} has a bad length {alen}")
        append((kind, data[i + 2 : i + alen]))
        if kind == _MA:
            ma = i + 2 if alen == 18 and ma == -1 else -2
        i += alen
    return Packet(code, identifier, authenticator, attributes, data, ma)


def _hmac(secret: bytes, data: bytes) -> bytes:
    return hmac.digest(secret, data, "md5")


def _header(code: int, identifier: int, authenticator: bytes, body: bytes) -> bytes:
    length = HEADER.size + len(body)
    if length > MAX_PACKET:
        raise ValueError("RADIUS packet too long")
    return HEADER.pack(code, identifier, length, authenticator)


def _xor16(a: bytes, b: bytes) -> bytes:
    """Two 16-octet blocks XORed (as integers: one C operation, not 16 Python ones)."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def encrypt_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """User-Password hiding (RFC 2865 §5.2): pad to 16n, XOR with the MD5 chain."""
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    out = bytearray()
    last = authenticator
    for i in range(0, len(padded), 16):
        chunk = _xor16(padded[i : i + 16], hashlib.md5(secret + last).digest())
        out += chunk
        last = chunk
    return bytes(out)


def decrypt_salted(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """Decrypt a salt-encrypted attribute (RFC 2868 §3.5; FreeRADIUS ``encrypt=2``, e.g. the 3GPP2 key).

    ``value`` = Salt(2, top bit set) + ciphertext (16n); b1 = MD5(secret + Request-Authenticator + salt),
    bi = MD5(secret + c(i-1)); the first plaintext octet is the data length.
    """
    if len(value) < 18 or (len(value) - 2) % 16 or not value[0] & 0x80:
        raise RadiusError("salt-encrypted value has a bad length or salt")
    salt, cipher = value[:2], value[2:]
    plain = bytearray()
    last = request_authenticator + salt
    for i in range(0, len(cipher), 16):
        chunk = cipher[i : i + 16]
        plain += _xor16(chunk, hashlib.md5(secret + last).digest())
        last = chunk
    n = plain[0]
    if n > len(plain) - 1:
        raise RadiusError("salt-encrypted value's length octet exceeds the data")
    return bytes(plain[1 : 1 + n])


def encrypt_salted(data: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    """The inverse of :func:`decrypt_salted` (tests; a server's side)."""
    plain = bytes((len(data),)) + data
    plain += bytes(-len(plain) % 16)
    out = bytearray(salt)
    last = request_authenticator + salt
    for i in range(0, len(plain), 16):
        chunk = _xor16(plain[i : i + 16], hashlib.md5(secret + last).digest())
        out += chunk
        last = chunk
    return bytes(out)


def access_request(
    identifier: int,
    authenticator: bytes,
    secret: bytes,
    attributes: bytes,
    *,
    password: bytes | None = None,
    code: int = Code.ACCESS_REQUEST,
) -> bytes:
    """An Access-Request: Message-Authenticator first (RFC 3579 §3.2), then ``attributes`` (encoded),
    then User-Password hidden with ``secret`` when ``password`` is given.  ``code`` Status-Server: the
    same shape, which RFC 5997 §3 requires (random Request Authenticator, Message-Authenticator)."""
    if password is not None:
        attributes += attribute(Attr.USER_PASSWORD, encrypt_password(password, secret, authenticator))
    head = _header(code, identifier, authenticator, _MA_PLACEHOLDER + attributes)
    return head + _MA_TYPE + _hmac(secret, head + _MA_PLACEHOLDER + attributes) + attributes


def _md5_signed(code: int, identifier: int, secret: bytes, attributes: bytes) -> bytes:
    head = _header(code, identifier, _ZERO16, attributes)[:4]
    return head + hashlib.md5(head + _ZERO16 + attributes + secret).digest() + attributes


def accounting_request(identifier: int, secret: bytes, attributes: bytes) -> bytes:
    """An Accounting-Request (RFC 2866 §3 Request Authenticator)."""
    return _md5_signed(Code.ACCOUNTING_REQUEST, identifier, secret, attributes)


def disconnect_request(identifier: int, secret: bytes, attributes: bytes) -> bytes:
    """A Disconnect-Request (RFC 5176 §2.3; the server side of tests and benches)."""
    return _md5_signed(Code.DISCONNECT_REQUEST, identifier, secret, attributes)


def _message_authenticator_ok(packet: Packet, secret: bytes, authenticator: bytes) -> bool | None:
    """None when absent; else whether it verifies with ``authenticator`` in the header (RFC 3579 §3.2)."""
    at = packet.message_authenticator
    if at < 0:
        return None if at == -1 else False
    raw = packet.raw
    covered = raw[:4] + authenticator + raw[20:at] + _ZERO16 + raw[at + 16 :]
    return hmac.compare_digest(_hmac(secret, covered), raw[at : at + 16])


def verify_answer(
    packet: Packet, secret: bytes, request_authenticator: bytes, *, require_message_authenticator: bool
) -> bool:
    """Response Authenticator (RFC 2865 §3) and Message-Authenticator (RFC 3579 §3.2) of an answer."""
    raw = packet.raw
    expected = hashlib.md5(raw[:4] + request_authenticator + raw[20:] + secret).digest()
    if not hmac.compare_digest(expected, packet.authenticator):
        return False
    ma = _message_authenticator_ok(packet, secret, request_authenticator)
    if ma is None:
        return not require_message_authenticator
    return ma


def verify_request(packet: Packet, secret: bytes) -> bool:
    """A Disconnect-Request's or CoA-Request's Request Authenticator (RFC 5176 §2.3) and, when present, its
    Message-Authenticator (computed over the packet with a zero Request Authenticator, RFC 5176 §3.1)."""
    raw = packet.raw
    expected = hashlib.md5(raw[:4] + _ZERO16 + raw[20:] + secret).digest()
    if not hmac.compare_digest(expected, packet.authenticator):
        return False
    return _message_authenticator_ok(packet, secret, _ZERO16) is not False


def answer(code: int, request: Packet, secret: bytes, attributes: bytes = b"") -> bytes:
    """An answer to ``request`` (Disconnect-ACK/NAK; an Access answer in tests) with a
    Message-Authenticator and the Response Authenticator (RFC 2865 §3, RFC 5176 §3.5)."""
    body = _MA_PLACEHOLDER + attributes
    head = _header(code, request.identifier, request.authenticator, body)
    body = _MA_TYPE + _hmac(secret, head + body) + attributes
    return head[:4] + hashlib.md5(head + body + secret).digest() + body

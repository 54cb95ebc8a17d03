"""Bytes <-> registration messages, in the style of aioquic's ``pull_*`` / ``push_*`` pairs.

Readers take one whole UDP payload (Mobile IP messages are never split across datagrams) and either
return a message or raise :class:`~ha.protocol.errors.ProtocolError`; they never raise anything else,
whatever the input.  Extension bodies are read by parsers chosen from ``_EXTENSION_READERS``, keyed by
type, and written by the matching ``_EXTENSION_WRITERS``.

Beyond the wire format the request reader enforces the structural rules of RFC 5944 §3.6.1.3 that
make a request "poorly formed" (code 134): see :func:`_check_request_structure`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from typing import Any

from .auth import SecurityAssociation
from .constants import (
    FIRST_SKIPPABLE_EXTENSION,
    MD5_AUTHENTICATOR_LENGTH,
    REPLY_FIXED_LENGTH,
    REQUEST_FIXED_LENGTH,
    ExtensionType,
    MessageType,
    ReplyCode,
)
from .errors import ProtocolError
from .messages import (
    LAYOUT_MN_HA,
    LAYOUT_UDP_TUNNEL,
    REQUEST_FLAGS,
    AuthenticationExtension,
    AuthKind,
    CriticalVendorExtension,
    Extension,
    ForeignHomeAuth,
    GeneralizedAuth,
    MobileForeignAuth,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationReply,
    RegistrationRequest,
    RevocationSupport,
    SkippedExtension,
    UdpTunnelReply,
    UdpTunnelRequest,
    ipv4,
    trusted_auth,
    trusted_nai,
    trusted_request,
    trusted_udp_tunnel_reply,
    trusted_udp_tunnel_request,
)

_REQUEST_FIXED = struct.Struct("!BBHIIIQ")
_REPLY_FIXED = struct.Struct("!BBHIIQ")
_SPI = struct.Struct("!I")
_LONG_HEADER = struct.Struct("!BBH")  # Type, Subtype/Reserved, Length16
_CVSE_BODY = struct.Struct("!IH")
_UDP_TUNNEL_REQUEST = struct.Struct("!BBBBH")
_UDP_TUNNEL_REPLY = struct.Struct("!BBHH")
_REVOCATION_SUPPORT = struct.Struct("!HI")
_SIGNED_AUTH_HEADER = struct.Struct("!BBI")  # Type, Length, SPI of an extension the encoder signs
_SIGNED_AUTH_LENGTH = 4 + MD5_AUTHENTICATOR_LENGTH
_PLAIN_REPLY = struct.Struct("!BBHIIQBBI")  # the fixed part, then Type, Length and SPI of ext 32
# Plain ints for per-message code: reading a member off an Enum class costs ~70 ns in Python 3.11.
_REQUEST = int(MessageType.REGISTRATION_REQUEST)
_REPLY = int(MessageType.REGISTRATION_REPLY)
_MN_HA = int(ExtensionType.MN_HA_AUTH)
_FA_HA = int(ExtensionType.FA_HA_AUTH)
#: The layout of nearly every request: the fixed part and one Mobile-Home extension with an MD5
#: authenticator, nothing else.  Told by its length and two bytes, it needs neither the extension
#: loop nor the structure check (a lone authorization-enabling extension is always well formed).
_PLAIN_REQUEST = struct.Struct("!BBHIIIQBBI")  # the fixed part, then Type, Length and SPI of ext 32
_PLAIN_REQUEST_LENGTH = _PLAIN_REQUEST.size + MD5_AUTHENTICATOR_LENGTH
#: A mobile node behind a NAT (RFC 3519): the fixed part, a UDP Tunnel Request, then the Mobile-Home
#: extension — the second most common layout, also read without the loop.
#: Read as the fixed part, the 144 extension's Type and Length as one integer, its body's first four
#: bytes as one (``SubType | Reserved | Flags | Encapsulation``, the key of
#: :func:`_udp_tunnel_request`'s cache), then the MN-HA extension's Type and Length, and its SPI.
_NAT_REQUEST = struct.Struct("!BBHIIIQHI2xHI")
_NAT_REQUEST_LENGTH = _NAT_REQUEST.size + MD5_AUTHENTICATOR_LENGTH
_UDP_TUNNEL_HEAD = (int(ExtensionType.UDP_TUNNEL_REQUEST) << 8) | _UDP_TUNNEL_REQUEST.size
_MN_HA_HEAD = (_MN_HA << 8) | _SIGNED_AUTH_LENGTH
_NAT_MN_HA_AT = REQUEST_FIXED_LENGTH + 8
#: The reply to it: the fixed part, the UDP Tunnel Reply, the Mobile-Home extension's header.
_NAT_REPLY = struct.Struct("!BBHIIQ8sBBI")

#: Signing keys for the encoder: extension type -> association whose key fills that authenticator.
Signers = Mapping[ExtensionType, SecurityAssociation]


class _Malformed(Exception):
    """Internal: a bad extension; the caller turns it into a ProtocolError with the right header."""

    def __init__(self, message: str, *, discard: bool = False) -> None:
        super().__init__(message)
        self.discard = discard


# --- extension readers: (second byte, datagram, body start, body end, offset) -> Extension ----------
# A reader gets the whole datagram and its body's bounds, not a slice: most bodies are read with
# ``unpack_from`` and need no intermediate bytes object.

Reader = Callable[[int, bytes, int, int, int], Extension]


def _read_auth(kind: type[AuthKind]) -> Reader:
    def read(_type: int, data: bytes, start: int, end: int, offset: int) -> Extension:
        if end - start < _SPI.size:
            raise _Malformed(f"extension {kind.TYPE} is {end - start} bytes, shorter than its SPI")
        return trusted_auth(kind, _SPI.unpack_from(data, start)[0], data[start + 4 : end], offset)

    return read


def _read_generalized_auth(subtype: int, data: bytes, start: int, end: int, offset: int) -> Extension:
    if end - start < _SPI.size:
        raise _Malformed("generalized authentication extension shorter than its SPI")
    (spi,) = _SPI.unpack_from(data, start)
    return GeneralizedAuth(subtype=subtype, spi=spi, authenticator=data[start + 4 : end], offset=offset)


def _read_cvse(_reserved: int, data: bytes, start: int, end: int, _offset: int) -> Extension:
    if end - start < _CVSE_BODY.size:
        raise _Malformed("CVSE shorter than its vendor id and type")
    vendor_id, vendor_type = _CVSE_BODY.unpack_from(data, start)
    return CriticalVendorExtension(vendor_id, vendor_type, data[start + _CVSE_BODY.size : end])


def _read_nai(_type: int, data: bytes, start: int, end: int, _offset: int) -> Extension:
    if start == end:
        raise _Malformed("empty NAI extension")
    try:
        return trusted_nai(data[start:end].decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Malformed("NAI is not UTF-8") from exc


def _read_challenge(_type: int, data: bytes, start: int, end: int, _offset: int) -> Extension:
    if start == end:
        raise _Malformed("empty MN-FA challenge")
    return MobileForeignChallenge(data[start:end])


def _fixed_size(name: str, layout: struct.Struct, data: bytes, start: int, end: int) -> tuple[int, ...]:
    if end - start != layout.size:
        raise _Malformed(f"{name} extension has length {end - start}, not {layout.size}")
    return layout.unpack_from(data, start)


def _read_udp_tunnel_request(_type: int, data: bytes, start: int, end: int, _offset: int) -> Extension:
    subtype, _rsv, flags, encapsulation, _rsv16 = _fixed_size(
        "UDP tunnel request", _UDP_TUNNEL_REQUEST, data, start, end
    )
    return trusted_udp_tunnel_request(flags, encapsulation, subtype)


def _read_udp_tunnel_reply(_type: int, data: bytes, start: int, end: int, _offset: int) -> Extension:
    subtype, code, flags, keepalive = _fixed_size("UDP tunnel reply", _UDP_TUNNEL_REPLY, data, start, end)
    return trusted_udp_tunnel_reply(code, keepalive, flags, subtype)


def _read_revocation_support(_type: int, data: bytes, start: int, end: int, _offset: int) -> Extension:
    flags, timestamp = _fixed_size("revocation support", _REVOCATION_SUPPORT, data, start, end)
    return RevocationSupport(flags=flags, timestamp=timestamp)


_EXTENSION_READERS: dict[int, Reader] = {
    ExtensionType.MN_HA_AUTH: _read_auth(MobileHomeAuth),
    ExtensionType.MN_FA_AUTH: _read_auth(MobileForeignAuth),
    ExtensionType.FA_HA_AUTH: _read_auth(ForeignHomeAuth),
    ExtensionType.GENERALIZED_AUTH: _read_generalized_auth,
    ExtensionType.CVSE: _read_cvse,
    ExtensionType.UDP_TUNNEL_REPLY: _read_udp_tunnel_reply,
    ExtensionType.MN_NAI: _read_nai,
    ExtensionType.MN_FA_CHALLENGE: _read_challenge,
    ExtensionType.REVOCATION_SUPPORT: _read_revocation_support,
    ExtensionType.UDP_TUNNEL_REQUEST: _read_udp_tunnel_request,
}
#: Long-format types: ``Type | Subtype-or-Reserved | Length16``; the second byte goes to the reader.
#: (Type 47, PMIPv4 non-skippable, is long too, but as an unknown type below 128 it discards anyway.)
_LONG_FORMAT = frozenset({ExtensionType.GENERALIZED_AUTH, ExtensionType.CVSE})


def _pull_extensions(data: bytes, start: int) -> tuple[Extension, ...]:
    """Read the extensions from ``start`` to the end of the datagram."""
    extensions: list[Extension] = []
    readers = _EXTENSION_READERS
    offset = start
    end = len(data)
    while offset < end:
        ext_type = data[offset]
        if ext_type in _LONG_FORMAT:
            if offset + _LONG_HEADER.size > end:
                raise _Malformed(f"truncated header of extension {ext_type} at offset {offset}")
            _t, second, length = _LONG_HEADER.unpack_from(data, offset)
            body_start = offset + _LONG_HEADER.size
        else:
            if offset + 2 > end:
                raise _Malformed(f"truncated header of extension {ext_type} at offset {offset}")
            second, length = ext_type, data[offset + 1]
            body_start = offset + 2
        body_end = body_start + length
        if body_end > end:
            raise _Malformed(
                f"extension {ext_type} at offset {offset} runs {body_end - end} bytes past the end"
            )
        reader = readers.get(ext_type)
        if reader is not None:
            extensions.append(reader(second, data, body_start, body_end, offset))
        elif ext_type >= FIRST_SKIPPABLE_EXTENSION:
            extensions.append(SkippedExtension(ext_type, data[body_start:body_end]))
        else:
            # RFC 5944 §1.9: unknown type 0-127 -> the whole message is silently discarded.
            raise _Malformed(f"unknown non-skippable extension type {ext_type}", discard=True)
        offset = body_end
    return tuple(extensions)


# --- structure rules ---------------------------------------------------------------------------------

#: Extensions that may appear at most once in a request (OpenSolaris answers 134 to duplicates).
_AT_MOST_ONCE = frozenset({MobileNodeNai, MobileForeignChallenge, MobileForeignAuth, ForeignHomeAuth})


def _check_request_structure(extensions: tuple[Extension, ...]) -> None:
    """Poorly formed (134) requests, RFC 5944 §3.6.1.3 / RFC 2794 / RFC 4721, in one pass.

    * no duplicated NAI, challenge or authentication extension, at most one MN-AAA extension;
    * not both a Mobile-Home and an MN-AAA extension (exactly one authorization-enabling extension);
    * the NAI precedes the authorization-enabling extension (it is what names the association);
    * a Foreign-Home extension comes after the authorization-enabling one (it covers it).
    """
    seen: set[type] = set()
    authorized = False  # an authorization-enabling extension (32 or 36/1) came before
    for extension in extensions:
        kind = type(extension)
        if kind is MobileHomeAuth or (type(extension) is GeneralizedAuth and extension.is_mn_aaa):
            if authorized:
                raise _Malformed("more than one authorization-enabling extension (32 or MN-AAA)")
            authorized = True
            continue
        if kind in _AT_MOST_ONCE:
            if kind in seen:
                raise _Malformed(f"duplicate {kind.__name__} extension")
            seen.add(kind)
            if kind is MobileNodeNai and authorized:
                raise _Malformed("the NAI extension follows the authorization-enabling extension")
            if kind is ForeignHomeAuth and not authorized:
                raise _Malformed("Foreign-Home authentication without a preceding authorization extension")


# --- readers -----------------------------------------------------------------------------------------


def _request_header(data: bytes) -> RegistrationRequest:
    """The fixed part alone, validated the ordinary way (only needed to answer a malformed request)."""
    _t, flags, lifetime, hoa, ha, coa, ident = _REQUEST_FIXED.unpack_from(data)
    return RegistrationRequest(
        REQUEST_FLAGS[flags], lifetime, IPv4Address(hoa), IPv4Address(ha), IPv4Address(coa), ident
    )


#: UDP Tunnel Requests by their body's first four bytes, reserved byte cleared: a request carries one
#: of a handful of values (mostly ``0 | 0 | 0 | 4``), and the record is immutable, so one is shared.
_UDP_TUNNEL_REQUESTS: dict[int, Extension] = {}
_NOT_RESERVED = 0xFF00FFFF


def _udp_tunnel_request(body: int) -> Extension:
    """The UDP Tunnel Request of ``SubType | Reserved | Flags | Encapsulation`` (cached, bounded)."""
    key = body & _NOT_RESERVED
    if len(_UDP_TUNNEL_REQUESTS) >= 256:  # an odd sender cycling values: start again, stay bounded
        _UDP_TUNNEL_REQUESTS.clear()
    extension = _UDP_TUNNEL_REQUESTS[key] = trusted_udp_tunnel_request(
        (key >> 8) & 0xFF, key & 0xFF, key >> 24
    )
    return extension


def pull_registration_request(data: bytes) -> RegistrationRequest:
    """Decode a Registration Request; raise ProtocolError (134 with ``header``, or discard)."""
    if type(data) is not bytes:
        data = bytes(data)
    if (
        len(data) == _PLAIN_REQUEST_LENGTH
        and data[0] == _REQUEST
        and data[REQUEST_FIXED_LENGTH] == _MN_HA
        and data[REQUEST_FIXED_LENGTH + 1] == _SIGNED_AUTH_LENGTH
    ):  # the usual layout: same result as the general path below, in half the time
        _t, flags, lifetime, hoa, ha, coa, ident, _ext, _len, spi = _PLAIN_REQUEST.unpack_from(data)
        auth = trusted_auth(MobileHomeAuth, spi, data[_PLAIN_REQUEST.size :], REQUEST_FIXED_LENGTH)
        return trusted_request(flags, lifetime, hoa, ha, coa, ident, (auth,), data, LAYOUT_MN_HA)
    if len(data) == _NAT_REQUEST_LENGTH and data[0] == _REQUEST:
        _t, flags, lifetime, hoa, ha, coa, ident, head, body, auth_head, spi = _NAT_REQUEST.unpack_from(data)
        if head == _UDP_TUNNEL_HEAD and auth_head == _MN_HA_HEAD:
            # RFC 3519: one UDP Tunnel Request before the MN-HA extension (well formed as it stands)
            tunnel = _UDP_TUNNEL_REQUESTS.get(body & _NOT_RESERVED) or _udp_tunnel_request(body)
            auth = trusted_auth(MobileHomeAuth, spi, data[_NAT_REQUEST.size :], _NAT_MN_HA_AT)
            return trusted_request(
                flags, lifetime, hoa, ha, coa, ident, (tunnel, auth), data, LAYOUT_UDP_TUNNEL
            )
    if len(data) < REQUEST_FIXED_LENGTH:
        raise ProtocolError(f"request of {len(data)} bytes is shorter than its fixed part (24)")
    msg_type, flags, lifetime, hoa, ha, coa, ident = _REQUEST_FIXED.unpack_from(data)
    if msg_type != _REQUEST:
        raise ProtocolError(f"message type {msg_type} is not a Registration Request")
    try:
        extensions = _pull_extensions(data, REQUEST_FIXED_LENGTH)
        _check_request_structure(extensions)
    except _Malformed as exc:
        if exc.discard:
            raise ProtocolError(str(exc)) from None
        raise ProtocolError(
            str(exc), reply_code_hint=ReplyCode.POORLY_FORMED_REQUEST, header=_request_header(data)
        ) from None
    return trusted_request(flags, lifetime, hoa, ha, coa, ident, extensions, data)


def pull_registration_reply(data: bytes) -> RegistrationReply:
    """Decode a Registration Reply (the mobile node side, tests and the simulator)."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < REPLY_FIXED_LENGTH:
        raise ProtocolError(f"reply of {len(data)} bytes is shorter than its fixed part (20)")
    msg_type, code, lifetime, hoa, ha, ident = _REPLY_FIXED.unpack_from(data)
    if msg_type != MessageType.REGISTRATION_REPLY:
        raise ProtocolError(f"message type {msg_type} is not a Registration Reply")
    try:
        extensions = _pull_extensions(data, REPLY_FIXED_LENGTH)
    except _Malformed as exc:
        raise ProtocolError(str(exc)) from None
    if sum(type(e) is MobileHomeAuth for e in extensions) > 1:
        raise ProtocolError("a reply carries exactly one Mobile-Home authentication extension")
    return RegistrationReply(code, lifetime, ipv4(hoa), ipv4(ha), ident, extensions, raw=data)


_MESSAGE_READERS: dict[int, Callable[[bytes], RegistrationRequest | RegistrationReply]] = {
    MessageType.REGISTRATION_REQUEST: pull_registration_request,
    MessageType.REGISTRATION_REPLY: pull_registration_reply,
}


def pull_message(data: bytes) -> RegistrationRequest | RegistrationReply:
    """Decode whichever registration message ``data`` holds (dispatch on the type byte)."""
    if not data:
        raise ProtocolError("empty datagram")
    reader = _MESSAGE_READERS.get(data[0])
    if reader is None:
        raise ProtocolError(f"unsupported message type {data[0]}")
    return reader(data)


# --- writers -----------------------------------------------------------------------------------------


def _short(ext_type: int, body: bytes) -> bytes:
    if len(body) > 255:
        raise ValueError(f"extension {ext_type} body of {len(body)} bytes does not fit a one-byte length")
    return bytes((ext_type, len(body))) + body


def _write_nai(ext: MobileNodeNai) -> bytes:
    return _short(ext.TYPE, ext.nai.encode("utf-8"))


def _write_challenge(ext: MobileForeignChallenge) -> bytes:
    return _short(ext.TYPE, ext.challenge)


def _write_cvse(ext: CriticalVendorExtension) -> bytes:
    body = _CVSE_BODY.pack(ext.vendor_id, ext.vendor_type) + ext.value
    return _LONG_HEADER.pack(ext.TYPE, 0, len(body)) + body


def _write_udp_tunnel_request(ext: UdpTunnelRequest) -> bytes:
    return _short(ext.TYPE, _UDP_TUNNEL_REQUEST.pack(ext.subtype, 0, ext.flags, ext.encapsulation, 0))


def _write_udp_tunnel_reply(ext: UdpTunnelReply) -> bytes:
    return _short(ext.TYPE, _UDP_TUNNEL_REPLY.pack(ext.subtype, ext.code, ext.flags, ext.keepalive_interval))


#: Encoded extensions 44 by the identity of the record (hashing a dataclass by value is a Python call
#: per reply); each entry holds its record, so the id cannot be reused while the entry exists.
_UDP_TUNNEL_REPLIES: dict[int, tuple[UdpTunnelReply, bytes]] = {}


def udp_tunnel_bytes(ext: UdpTunnelReply) -> bytes:
    """The encoded extension 44, cached: a home agent sends very few distinct ones (two per policy)."""
    entry = _UDP_TUNNEL_REPLIES.get(id(ext))
    if entry is not None and entry[0] is ext:
        return entry[1]
    if len(_UDP_TUNNEL_REPLIES) > 64:
        _UDP_TUNNEL_REPLIES.clear()
    encoded = _write_udp_tunnel_reply(ext)
    _UDP_TUNNEL_REPLIES[id(ext)] = (ext, encoded)
    return encoded


def _write_revocation_support(ext: RevocationSupport) -> bytes:
    return _short(ext.TYPE, _REVOCATION_SUPPORT.pack(ext.flags, ext.timestamp))


def _write_skipped(ext: SkippedExtension) -> bytes:
    return _short(ext.type, ext.data)


_EXTENSION_WRITERS: dict[type, Callable[[Any], bytes]] = {  # each takes the type it is keyed by
    MobileNodeNai: _write_nai,
    MobileForeignChallenge: _write_challenge,
    CriticalVendorExtension: _write_cvse,
    UdpTunnelRequest: _write_udp_tunnel_request,
    UdpTunnelReply: _write_udp_tunnel_reply,
    RevocationSupport: _write_revocation_support,
    SkippedExtension: _write_skipped,
}


def _push_extensions(out: bytearray, extensions: tuple[Extension, ...], sign: Signers) -> None:
    """Append extensions; authenticators whose type is in ``sign`` are computed over ``out`` so far."""
    for ext in extensions:
        if isinstance(ext, AuthenticationExtension):
            header = bytes((ext.TYPE,))
            sa = sign.get(ext.TYPE)
            if sa is None:
                out += _short(ext.TYPE, _SPI.pack(ext.spi) + ext.authenticator)
                continue
            if sa.spi != ext.spi:
                raise ValueError(f"extension {ext.TYPE} names SPI {ext.spi}, the signing key is SPI {sa.spi}")
            prefix = header + bytes((4 + MD5_AUTHENTICATOR_LENGTH,)) + _SPI.pack(ext.spi)
            out += prefix
            out += sa.authenticator(out)
        elif isinstance(ext, GeneralizedAuth):
            body = _SPI.pack(ext.spi) + ext.authenticator
            out += _LONG_HEADER.pack(ext.TYPE, ext.subtype, len(body)) + body
        else:
            out += _EXTENSION_WRITERS[type(ext)](ext)


def push_registration_request(request: RegistrationRequest, *, sign: Signers | None = None) -> bytes:
    """Encode a request; authentication extensions whose type is in ``sign`` get computed authenticators."""
    out = bytearray(
        _REQUEST_FIXED.pack(
            MessageType.REGISTRATION_REQUEST,
            int(request.flags),
            request.lifetime,
            int(request.home_address),
            int(request.home_agent),
            int(request.care_of_address),
            request.identification,
        )
    )
    _push_extensions(out, request.extensions, sign or {})
    return bytes(out)


def push_registration_reply(reply: RegistrationReply, *, sign: Signers | None = None) -> bytes:
    """Encode a reply; authentication extensions whose type is in ``sign`` get computed authenticators."""
    out = bytearray(
        _REPLY_FIXED.pack(
            MessageType.REGISTRATION_REPLY,
            reply.code,
            reply.lifetime,
            int(reply.home_address),
            int(reply.home_agent),
            reply.identification,
        )
    )
    _push_extensions(out, reply.extensions, sign or {})
    return bytes(out)


def push_signed_reply(
    code: int,
    lifetime: int,
    home_address: int,
    home_agent: int,
    identification: int,
    nai: MobileNodeNai | None = None,
    mn_ha: SecurityAssociation | None = None,
    challenge: MobileForeignChallenge | None = None,
    fa_ha: SecurityAssociation | None = None,
    udp_tunnel: UdpTunnelReply | bytes | None = None,
    revocation: RevocationSupport | None = None,
) -> bytes:
    """A home agent's reply straight from its fields, in the order of RFC 5944 §3.6.1.3 / RFC 4721.

    Same bytes as ``push_registration_reply`` of the equivalent ``RegistrationReply`` signed with
    ``mn_ha`` / ``fa_ha``, without building the message and extension objects first: this runs once
    per request.  Addresses are integers.  Extensions: NAI echoed, MN-HA, challenge echoed, FA-HA (each
    one when given).  RFC 3519's UDP Tunnel Reply goes before the MN-HA extension (it authenticates
    it, §3.2) and RFC 3543's Revocation Support before the FA-HA extension (§3.2).  ``udp_tunnel`` may
    be given encoded (its 8 bytes, as ``decision.UdpTunnel`` keeps them).
    """
    if nai is None and mn_ha is not None and udp_tunnel is not None:  # RFC 3519's usual reply
        out = _NAT_REPLY.pack(
            _REPLY,
            code,
            lifetime,
            home_address,
            home_agent,
            identification,
            udp_tunnel if isinstance(udp_tunnel, bytes) else udp_tunnel_bytes(udp_tunnel),
            _MN_HA,
            _SIGNED_AUTH_LENGTH,
            mn_ha.spi,
        )
        out += mn_ha.authenticator(out)
    elif nai is None and mn_ha is not None and udp_tunnel is None:  # the usual reply: one pack
        out = _PLAIN_REPLY.pack(
            _REPLY,
            code,
            lifetime,
            home_address,
            home_agent,
            identification,
            _MN_HA,
            _SIGNED_AUTH_LENGTH,
            mn_ha.spi,
        )
        out += mn_ha.authenticator(out)
    else:
        out = _REPLY_FIXED.pack(_REPLY, code, lifetime, home_address, home_agent, identification)
        if nai is not None:
            out += _write_nai(nai)
        if udp_tunnel is not None:
            out += udp_tunnel if isinstance(udp_tunnel, bytes) else udp_tunnel_bytes(udp_tunnel)
        if mn_ha is not None:
            out += _SIGNED_AUTH_HEADER.pack(_MN_HA, _SIGNED_AUTH_LENGTH, mn_ha.spi)
            out += mn_ha.authenticator(out)
    if challenge is not None:
        out += _write_challenge(challenge)
    if revocation is not None:
        out += _write_revocation_support(revocation)
    if fa_ha is not None:
        out += _SIGNED_AUTH_HEADER.pack(_FA_HA, _SIGNED_AUTH_LENGTH, fa_ha.spi)
        out += fa_ha.authenticator(out)
    return out

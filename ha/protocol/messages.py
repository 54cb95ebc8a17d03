"""Registration messages and their extensions as frozen dataclasses (the h11 "events" of mipha).

Objects validate their fields on construction, so a message that exists can always be encoded.
The codec builds the ones it reads through the ``trusted_*`` constructors below instead: the wire
format already bounds every field (a byte is 0..255, a length was checked), so validating again
would only cost time on the hot path.  Parsed messages also remember where each extension sat in
the datagram (``offset``) and the datagram itself (``raw``): an authenticator covers the bytes
exactly as they were received, never a re-encoding.  Both are left out of equality, so a parsed
message equals the one that was built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import ClassVar, TypeVar

from .constants import (
    FIRST_SKIPPABLE_EXTENSION,
    INFINITE_LIFETIME,
    ExtensionType,
    GeneralizedAuthSubtype,
    RequestFlags,
)

UNSPECIFIED = IPv4Address(0)
LIMITED_BROADCAST = IPv4Address("255.255.255.255")

#: ``RequestFlags`` for every octet value: indexing is ~20 times cheaper than calling the enum.
REQUEST_FLAGS: tuple[RequestFlags, ...] = tuple(RequestFlags(value) for value in range(256))

_ADDRESS_CACHE_SIZE = 1 << 16
_addresses: dict[int, IPv4Address] = {}


def ipv4(value: int) -> IPv4Address:
    """``IPv4Address(value)`` for a 32-bit integer read off the wire, from a bounded cache.

    A home agent sees the same few addresses again and again (its own, its mobile nodes', their
    care-of addresses); constructing an ``IPv4Address`` costs more than the dictionary look-up.  The
    cache is simply emptied when full, which keeps it bounded without bookkeeping per hit.
    """
    address = _addresses.get(value)
    if address is None:
        if len(_addresses) >= _ADDRESS_CACHE_SIZE:
            _addresses.clear()
        address = _addresses[value] = IPv4Address(value)
    return address


_new = object.__new__


def _check_uint(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} {value!r} does not fit in {bits} bits")


def _check_bytes(name: str, value: bytes, maximum: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) > maximum:
        raise ValueError(f"{name} is {len(value)} bytes; at most {maximum} fit")


# --- extensions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthenticationExtension:
    """Common shape of extensions 32, 33 and 34: ``SPI(32) | Authenticator``.

    ``authenticator`` may be empty in a message that is about to be signed by the encoder.
    """

    TYPE: ClassVar[ExtensionType]
    spi: int
    authenticator: bytes = b""
    offset: int = field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_uint("SPI", self.spi, 32)
        _check_bytes("authenticator", self.authenticator, 255 - 4)


@dataclass(frozen=True, slots=True)
class MobileHomeAuth(AuthenticationExtension):
    """Mobile-Home Authentication extension (32): the authorization-enabling extension of RFC 5944."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.MN_HA_AUTH


@dataclass(frozen=True, slots=True)
class MobileForeignAuth(AuthenticationExtension):
    """Mobile-Foreign Authentication extension (33): for the foreign agent; the home agent skips it."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.MN_FA_AUTH


@dataclass(frozen=True, slots=True)
class ForeignHomeAuth(AuthenticationExtension):
    """Foreign-Home Authentication extension (34): covers everything before it, the 32 included."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.FA_HA_AUTH


@dataclass(frozen=True, slots=True)
class GeneralizedAuth:
    """Generalized Mobile IP Authentication extension (36, RFC 4721): ``Subtype | Len16 | SPI | Auth``."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.GENERALIZED_AUTH
    subtype: int
    spi: int
    authenticator: bytes = b""
    offset: int = field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_uint("subtype", self.subtype, 8)
        _check_uint("SPI", self.spi, 32)
        _check_bytes("authenticator", self.authenticator, 0xFFFF - 4)

    @property
    def is_mn_aaa(self) -> bool:
        """True for the MN-AAA subtype, which is authorization-enabling (RFC 4721 §6)."""
        return self.subtype == GeneralizedAuthSubtype.MN_AAA


@dataclass(frozen=True, slots=True)
class MobileNodeNai:
    """Mobile Node NAI extension (131, RFC 2794): the user name the mobile node is known by."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.MN_NAI
    nai: str

    def __post_init__(self) -> None:
        if not self.nai:
            raise ValueError("an NAI extension must not be empty")
        _check_bytes("NAI", self.nai.encode("utf-8"), 255)


@dataclass(frozen=True, slots=True)
class MobileForeignChallenge:
    """MN-FA Challenge extension (132, RFC 4721): a foreign agent challenge the home agent echoes."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.MN_FA_CHALLENGE
    challenge: bytes

    def __post_init__(self) -> None:
        _check_bytes("challenge", self.challenge, 255)
        if not self.challenge:
            raise ValueError("a challenge must not be empty")


@dataclass(frozen=True, slots=True)
class CriticalVendorExtension:
    """Critical Vendor/Organization Specific extension (38, RFC 3115); its reserved byte is dropped.

    A receiver that does not understand one must deny the registration (codes 140/141).
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.CVSE
    vendor_id: int
    vendor_type: int
    value: bytes = b""

    def __post_init__(self) -> None:
        _check_uint("vendor id", self.vendor_id, 32)
        _check_uint("vendor CVSE type", self.vendor_type, 16)
        _check_bytes("CVSE value", self.value, 0xFFFF - 6)


@dataclass(frozen=True, slots=True)
class UdpTunnelRequest:
    """UDP Tunnel Request extension (144, RFC 3519), skippable: ``SubType|Rsv|Flags|Encap|Rsv16``."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.UDP_TUNNEL_REQUEST
    F_FORCE: ClassVar[int] = 0x80
    R_REQUIRED: ClassVar[int] = 0x40
    flags: int = 0
    encapsulation: int = 4
    subtype: int = 0

    def __post_init__(self) -> None:
        _check_uint("flags", self.flags, 8)
        _check_uint("encapsulation", self.encapsulation, 8)
        _check_uint("subtype", self.subtype, 8)


@dataclass(frozen=True, slots=True)
class UdpTunnelReply:
    """UDP Tunnel Reply extension (44, RFC 3519): ``SubType | Code | Flags16 | Keepalive16``."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.UDP_TUNNEL_REPLY
    code: int
    keepalive_interval: int = 0
    flags: int = 0
    subtype: int = 0

    def __post_init__(self) -> None:
        _check_uint("code", self.code, 8)
        _check_uint("keepalive interval", self.keepalive_interval, 16)
        _check_uint("flags", self.flags, 16)
        _check_uint("subtype", self.subtype, 8)


@dataclass(frozen=True, slots=True)
class RevocationSupport:
    """Revocation Support extension (137, RFC 3543): ``Flags16 (I = 0x8000) | Timestamp32``."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.REVOCATION_SUPPORT
    I_BIT: ClassVar[int] = 0x8000
    flags: int
    timestamp: int

    def __post_init__(self) -> None:
        _check_uint("flags", self.flags, 16)
        _check_uint("timestamp", self.timestamp, 32)


@dataclass(frozen=True, slots=True)
class SkippedExtension:
    """A skippable extension (type 128-255) mipha does not interpret, kept verbatim.

    Keeping it lets a decoded message be re-encoded byte for byte, and lets callers see what a peer
    sent (NVSE 134, Dynamic HA 139, Encapsulating Delivery Style 130, ...).
    """

    type: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not FIRST_SKIPPABLE_EXTENSION <= self.type <= 255:
            raise ValueError(f"extension type {self.type} is not skippable (128-255)")
        _check_bytes("extension data", self.data, 255)


Extension = (
    MobileHomeAuth
    | MobileForeignAuth
    | ForeignHomeAuth
    | GeneralizedAuth
    | MobileNodeNai
    | MobileForeignChallenge
    | CriticalVendorExtension
    | UdpTunnelRequest
    | UdpTunnelReply
    | RevocationSupport
    | SkippedExtension
)


def _find(extensions: tuple[Extension, ...], kind: type) -> int | None:
    for index, extension in enumerate(extensions):
        if isinstance(extension, kind):
            return index
    return None


# --- messages --------------------------------------------------------------------------------------


class _ExtensionAccess:
    """Look-ups shared by requests and replies (they only read ``self.extensions``)."""

    __slots__ = ()
    extensions: tuple[Extension, ...]

    def first(self, kind: type) -> Extension | None:
        """The first extension of this class, or None."""
        for extension in self.extensions:
            if isinstance(extension, kind):
                return extension
        return None

    def index_of(self, kind: type) -> int | None:
        """Position of the first extension of this class in ``extensions``, or None."""
        return _find(self.extensions, kind)

    @property
    def nai(self) -> str | None:
        """The mobile node's NAI (RFC 2794) when the message carries one."""
        for extension in self.extensions:
            if type(extension) is MobileNodeNai:
                return extension.nai
        return None

    @property
    def mn_ha_auth(self) -> MobileHomeAuth | None:
        """The Mobile-Home Authentication extension, or None."""
        for extension in self.extensions:
            if type(extension) is MobileHomeAuth:
                return extension
        return None

    @property
    def fa_ha_auth(self) -> ForeignHomeAuth | None:
        """The Foreign-Home Authentication extension, or None."""
        for extension in self.extensions:
            if type(extension) is ForeignHomeAuth:
                return extension
        return None


@dataclass(frozen=True, slots=True)
class RegistrationRequest(_ExtensionAccess):
    """Registration Request (type 1, RFC 5944 §3.3).

    ``lifetime`` 0 deregisters, 0xffff is infinite.  ``home_address`` 0.0.0.0 asks the home agent
    to assign one (RFC 2794, needs an NAI).  ``identification`` is the full 64-bit field.
    """

    flags: RequestFlags
    lifetime: int
    home_address: IPv4Address
    home_agent: IPv4Address
    care_of_address: IPv4Address
    identification: int
    extensions: tuple[Extension, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)
    #: (home address, home agent, care-of address) as integers, for the decision's comparisons.
    integers: tuple[int, int, int] = field(init=False, compare=False, repr=False)
    #: Which of the usual extension layouts this is (:func:`request_layout`), read once per request
    #: by several consumers instead of each testing the extension types.
    layout: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_uint("flags", int(self.flags), 8)
        _check_uint("lifetime", self.lifetime, 16)
        _check_uint("identification", self.identification, 64)
        for name in ("home_address", "home_agent", "care_of_address"):
            if not isinstance(getattr(self, name), IPv4Address):
                raise TypeError(f"{name} must be an IPv4Address")
        object.__setattr__(self, "flags", RequestFlags(self.flags))
        object.__setattr__(self, "extensions", tuple(self.extensions))
        integers = (int(self.home_address), int(self.home_agent), int(self.care_of_address))
        object.__setattr__(self, "integers", integers)
        object.__setattr__(self, "layout", request_layout(self.extensions))

    @property
    def is_deregistration(self) -> bool:
        """Lifetime zero: remove one binding, or all of them when the care-of address is the home address."""
        return self.lifetime == 0

    @property
    def deregisters_all(self) -> bool:
        """RFC 5944 §3.6.1.2: lifetime 0 with care-of address = home address drops every binding."""
        return self.lifetime == 0 and self.care_of_address == self.home_address

    @property
    def infinite(self) -> bool:
        """Lifetime 0xffff asks for a binding that never expires."""
        return self.lifetime == INFINITE_LIFETIME

    def header(self) -> RegistrationRequest:
        """The fixed part alone: what is needed to answer a request that failed to parse."""
        return RegistrationRequest(
            self.flags,
            self.lifetime,
            self.home_address,
            self.home_agent,
            self.care_of_address,
            self.identification,
        )


@dataclass(frozen=True, slots=True)
class RegistrationReply(_ExtensionAccess):
    """Registration Reply (type 3, RFC 5944 §3.4); ``code`` is a plain int so foreign codes decode."""

    code: int
    lifetime: int
    home_address: IPv4Address
    home_agent: IPv4Address
    identification: int
    extensions: tuple[Extension, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_uint("code", int(self.code), 8)
        _check_uint("lifetime", self.lifetime, 16)
        _check_uint("identification", self.identification, 64)
        for name in ("home_address", "home_agent"):
            if not isinstance(getattr(self, name), IPv4Address):
                raise TypeError(f"{name} must be an IPv4Address")
        object.__setattr__(self, "code", int(self.code))
        object.__setattr__(self, "extensions", tuple(self.extensions))

    @property
    def accepted(self) -> bool:
        """Codes 0 and 1."""
        return self.code in (0, 1)


# --- trusted constructors (the codec's, for values it has just read and bounded) -------------------
# They write the slots of a frozen instance directly through the slot descriptors, as the dataclass'
# own ``__init__`` does with ``object.__setattr__`` (about twice as fast), and skip ``__post_init__``.


def _slot_setters(cls: type, *names: str) -> tuple[Callable[[object, object], None], ...]:
    return tuple(getattr(cls, name).__set__ for name in names)


_AUTH_SETTERS = _slot_setters(AuthenticationExtension, "spi", "authenticator", "offset")
(_set_nai,) = _slot_setters(MobileNodeNai, "nai")
_UDP_TUNNEL_REQUEST_SETTERS = _slot_setters(UdpTunnelRequest, "flags", "encapsulation", "subtype")
_UDP_TUNNEL_REPLY_SETTERS = _slot_setters(UdpTunnelReply, "code", "keepalive_interval", "flags", "subtype")
_REQUEST_SETTERS = _slot_setters(
    RegistrationRequest,
    "flags",
    "lifetime",
    "home_address",
    "home_agent",
    "care_of_address",
    "identification",
    "extensions",
    "raw",
    "integers",
    "layout",
)

#: ``RegistrationRequest.layout`` values: any other layout (0, false), the Mobile-Home extension alone,
#: or RFC 3519's UDP Tunnel Request then the Mobile-Home extension.  A request with either of the last
#: two names no NAI, echoes nothing, and its last extension is its authorization-enabling one.
LAYOUT_OTHER = 0
LAYOUT_MN_HA = 1
LAYOUT_UDP_TUNNEL = 2


def request_layout(extensions: tuple[Extension, ...]) -> int:
    """The ``layout`` of a request carrying ``extensions``."""
    kinds = tuple(map(type, extensions))
    if kinds == (MobileHomeAuth,):
        return LAYOUT_MN_HA
    if kinds == (UdpTunnelRequest, MobileHomeAuth):
        return LAYOUT_UDP_TUNNEL
    return LAYOUT_OTHER


#: the three SPI + authenticator extensions (32, 33, 34) that :func:`trusted_auth` builds
AuthKind = TypeVar("AuthKind", MobileHomeAuth, MobileForeignAuth, ForeignHomeAuth)


def trusted_auth(kind: type[AuthKind], spi: int, authenticator: bytes, offset: int) -> AuthKind:
    """A 32/33/34 extension read from a datagram (``spi`` from 4 bytes, ``authenticator`` < 252 bytes)."""
    extension = _new(kind)
    set_spi, set_authenticator, set_offset = _AUTH_SETTERS
    set_spi(extension, spi)
    set_authenticator(extension, authenticator)
    set_offset(extension, offset)
    return extension


def trusted_udp_tunnel_request(flags: int, encapsulation: int, subtype: int) -> UdpTunnelRequest:
    """A UDP Tunnel Request read from a datagram (three bytes)."""
    extension = _new(UdpTunnelRequest)
    set_flags, set_encapsulation, set_subtype = _UDP_TUNNEL_REQUEST_SETTERS
    set_flags(extension, flags)
    set_encapsulation(extension, encapsulation)
    set_subtype(extension, subtype)
    return extension


def trusted_udp_tunnel_reply(code: int, keepalive_interval: int, flags: int, subtype: int) -> UdpTunnelReply:
    """A UDP Tunnel Reply read from a datagram (bytes and 16-bit fields)."""
    extension = _new(UdpTunnelReply)
    for setter, value in zip(
        _UDP_TUNNEL_REPLY_SETTERS, (code, keepalive_interval, flags, subtype), strict=True
    ):
        setter(extension, value)
    return extension


def trusted_nai(nai: str) -> MobileNodeNai:
    """An NAI extension read from a datagram (non-empty, at most 255 bytes of UTF-8)."""
    extension = _new(MobileNodeNai)
    _set_nai(extension, nai)
    return extension


def trusted_request(
    flags: int,
    lifetime: int,
    home_address: int,
    home_agent: int,
    care_of_address: int,
    identification: int,
    extensions: tuple[Extension, ...],
    raw: bytes,
    layout: int | None = None,
) -> RegistrationRequest:
    """A request from the fields of a datagram's fixed part, unpacked to integers of the right widths.

    ``layout``: the codec's short cuts know it (None: worked out from ``extensions``).
    """
    request = _new(RegistrationRequest)
    set_flags, set_life, set_home, set_agent, set_coa, set_id, set_ext, set_raw, set_ints, set_layout = (
        _REQUEST_SETTERS
    )
    set_flags(request, REQUEST_FLAGS[flags])
    set_life(request, lifetime)
    cached = _addresses.get  # ipv4() without a call per address when the cache has it
    set_home(request, cached(home_address) or ipv4(home_address))
    set_agent(request, cached(home_agent) or ipv4(home_agent))
    set_coa(request, cached(care_of_address) or ipv4(care_of_address))
    set_id(request, identification)
    set_ext(request, extensions)
    set_raw(request, raw)
    set_ints(request, (home_address, home_agent, care_of_address))
    set_layout(request, request_layout(extensions) if layout is None else layout)
    return request

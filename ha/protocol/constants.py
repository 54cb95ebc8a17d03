"""Numbers of the Mobile IPv4 registration protocol (RFC 5944 and the extensions mipha understands).

Everything here is a wire value, named once so the codec, the decision logic and the engine agree.
String enums use the spelling of the ``mipha-home-agent`` YANG module, so configuration maps onto
them without a translation table.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag, StrEnum

#: UDP port a home agent listens on (RFC 5944 §3.1).
REGISTRATION_PORT = 434
#: Lifetime value meaning "until deregistered" (RFC 5944 §3.3).
INFINITE_LIFETIME = 0xFFFF
#: Seconds between the NTP epoch (1900) and the Unix epoch (1970), for timestamp identification.
NTP_UNIX_OFFSET = 2_208_988_800
#: SPIs 0-255 are reserved (RFC 5944 §1.6) and never name a configured security association.
MIN_CONFIGURABLE_SPI = 256
#: Authenticator length for both MD5 based algorithms (128 bits).
MD5_AUTHENTICATOR_LENGTH = 16

REQUEST_FIXED_LENGTH = 24
REPLY_FIXED_LENGTH = 20


class MessageType(IntEnum):
    """UDP 434 message types (IANA "Mobile IPv4 numbers")."""

    REGISTRATION_REQUEST = 1
    REGISTRATION_REPLY = 3
    TUNNEL_DATA = 4  # RFC 3519
    REGISTRATION_REVOCATION = 7  # RFC 3543
    REVOCATION_ACKNOWLEDGEMENT = 15  # RFC 3543


class RequestFlags(IntFlag):
    """The flags octet of a Registration Request (RFC 5944 §3.3, RFC 3024 for T)."""

    S = 0x80  # simultaneous bindings
    B = 0x40  # broadcast datagrams
    D = 0x20  # decapsulation by the mobile node (co-located care-of address)
    M = 0x10  # minimal encapsulation (RFC 2004)
    G = 0x08  # GRE encapsulation
    R = 0x04  # was V (RFC 2002); "sent as zero, ignored on reception"
    T = 0x02  # reverse tunnelling requested (RFC 3024)
    X = 0x01  # "sent as zero, ignored on reception"

    NONE = 0


#: Flags that carry meaning; the others are ignored on reception (see docs/protocol-decisions.md).
MEANINGFUL_FLAGS = (
    RequestFlags.S | RequestFlags.B | RequestFlags.D | RequestFlags.M | RequestFlags.G | RequestFlags.T
)


class ReplyCode(IntEnum):
    """Registration Reply codes a home agent sends or a mobile node may receive (RFC 5944 §3.4)."""

    ACCEPTED = 0
    ACCEPTED_NO_SIMULTANEOUS_BINDINGS = 1
    # 64-127 are foreign agent codes: a home agent never sends them, decoders keep them as plain ints.
    REASON_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INSUFFICIENT_RESOURCES = 130
    MN_FAILED_AUTHENTICATION = 131
    FA_FAILED_AUTHENTICATION = 132
    IDENTIFICATION_MISMATCH = 133
    POORLY_FORMED_REQUEST = 134
    TOO_MANY_SIMULTANEOUS_BINDINGS = 135
    UNKNOWN_HOME_AGENT_ADDRESS = 136
    REVERSE_TUNNEL_UNAVAILABLE = 137  # RFC 3024
    REVERSE_TUNNEL_MANDATORY = 138  # RFC 3024: "'T' bit not set"
    ENCAPSULATION_UNAVAILABLE = 139  # RFC 3024
    MN_CVSE_NOT_UNDERSTOOD = 140  # RFC 3115
    FA_CVSE_NOT_UNDERSTOOD = 141  # RFC 3115
    UDP_ENCAPSULATION_UNAVAILABLE = 142  # RFC 3519
    REGISTER_WITH_REDIRECTED_HA = 143  # RFC 4433
    MN_FAILED_AAA_AUTHENTICATION = 144  # RFC 4721

    @property
    def accepted(self) -> bool:
        """Codes 0 and 1 accept the registration; every other code denies it."""
        return self <= ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS


def is_accepted(code: int) -> bool:
    """True for the two "accepted" codes, also for raw integers outside :class:`ReplyCode`."""
    return code in (0, 1)


class ExtensionType(IntEnum):
    """Registration extension types mipha parses (IANA "Mobile IPv4 numbers", extensions)."""

    MN_HA_AUTH = 32  # Mobile-Home Authentication
    MN_FA_AUTH = 33  # Mobile-Foreign Authentication
    FA_HA_AUTH = 34  # Foreign-Home Authentication
    GENERALIZED_AUTH = 36  # RFC 4721 (long format: Type, Subtype, Length16)
    CVSE = 38  # RFC 3115 Critical Vendor/Organization Specific (Type, Reserved, Length16)
    UDP_TUNNEL_REPLY = 44  # RFC 3519
    MN_NAI = 131  # RFC 2794
    MN_FA_CHALLENGE = 132  # RFC 4721
    NVSE = 134  # RFC 3115 Normal Vendor/Organization Specific
    REVOCATION_SUPPORT = 137  # RFC 3543
    UDP_TUNNEL_REQUEST = 144  # RFC 3519


#: Types 128-255 may be skipped when not understood; an unknown type below 128 discards the message.
FIRST_SKIPPABLE_EXTENSION = 128


class GeneralizedAuthSubtype(IntEnum):
    """Subtypes of the Generalized Mobile IP Authentication extension (type 36)."""

    MN_AAA = 1  # RFC 4721


class AuthAlgorithm(StrEnum):
    """Authenticator algorithms of a mobility security association (YANG ``algorithm``)."""

    HMAC_MD5 = "hmac-md5"  # RFC 2104 / RFC 5944 §5.1 default
    KEYED_MD5_PREFIX_SUFFIX = "keyed-md5-prefix-suffix"  # RFC 2002 default: MD5(key | data | key)


class ReplayProtection(StrEnum):
    """How the Identification field protects against replays (YANG ``replay-protection``)."""

    TIMESTAMP = "timestamp"
    NONCE = "nonce"
    NONE = "none"


class ReverseTunnelPolicy(StrEnum):
    """Home agent reverse tunnelling policy (YANG ``reverse-tunnel``, RFC 3024)."""

    ALLOWED = "allowed"
    REQUIRED = "required"
    DISABLED = "disabled"


class Encapsulation(StrEnum):
    """Forward tunnel encapsulations (YANG ``encapsulation``); same values as the data plane's enum."""

    IP_IN_IP = "ip-in-ip"  # RFC 2003, mandatory to support
    GRE = "gre"  # RFC 2784, requested with G
    MINIMAL = "minimal"  # RFC 2004, requested with M


class SecurityViolation(StrEnum):
    """Why a request failed authentication (MIP-MIB ``mipSecViolationReason``, YANG spelling)."""

    NO_SECURITY_ASSOCIATION = "no-mobility-security-association"
    BAD_AUTHENTICATOR = "bad-authenticator"
    BAD_IDENTIFIER = "bad-identifier"
    BAD_SPI = "bad-spi"
    MISSING_SECURITY_EXTENSION = "missing-security-extension"
    OTHER = "other"

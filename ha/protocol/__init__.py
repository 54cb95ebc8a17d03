"""The Mobile IPv4 registration protocol (RFC 5944 family), sans-I/O.

This package contains no networking code at all, reads no clock and draws no random numbers: bytes,
the two clocks (``now`` monotonic, ``wallclock`` Unix time) and a nonce come in as arguments, verdicts
and reply bytes go out.  The engine owns the state and the UDP socket.  Typical use by the engine::

    try:
        request = pull_registration_request(payload)
    except ProtocolError as error:
        reply = encode_malformed_reply(error)  # None: discard silently
    else:
        verdict = decide(request, policy=..., mobile_node=..., foreign_agent=..., arrival=...,
                         now=loop.time(), wallclock=time.time(), fresh_nonce=secrets.randbits(32))
        # apply the verdict to the bindings, then:
        reply = encode_reply(verdict)

Modules: ``constants`` (wire numbers), ``messages`` (frozen message/extension classes), ``codec``
(bytes <-> messages), ``auth`` (security associations, authenticators), ``replay`` (identification),
``decision`` (the verdict), ``reply`` (reply messages and addressing), ``errors``.
"""

from .auth import SecurityAssociation, compute_authenticator, verify
from .codec import (
    pull_message,
    pull_registration_reply,
    pull_registration_request,
    push_registration_reply,
    push_registration_request,
)
from .constants import (
    INFINITE_LIFETIME,
    REGISTRATION_PORT,
    AuthAlgorithm,
    Encapsulation,
    ExtensionType,
    MessageType,
    ReplayProtection,
    ReplyCode,
    RequestFlags,
    ReverseTunnelPolicy,
    SecurityViolation,
)
from .decision import (
    Accept,
    Arrival,
    BindingAction,
    Deny,
    ForeignAgentRecord,
    HomeAgentPolicy,
    MobileNodeRecord,
    Verdict,
    decide,
    with_home_address,
)
from .errors import ProtocolError
from .messages import (
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
)
from .replay import ntp_timestamp, unix_time
from .reply import ReplyAddress, build_reply, encode_malformed_reply, encode_reply, reply_address

__all__ = [
    "INFINITE_LIFETIME",
    "REGISTRATION_PORT",
    "Accept",
    "Arrival",
    "AuthAlgorithm",
    "BindingAction",
    "CriticalVendorExtension",
    "Deny",
    "Encapsulation",
    "Extension",
    "ExtensionType",
    "ForeignAgentRecord",
    "ForeignHomeAuth",
    "GeneralizedAuth",
    "HomeAgentPolicy",
    "MessageType",
    "MobileForeignAuth",
    "MobileForeignChallenge",
    "MobileHomeAuth",
    "MobileNodeNai",
    "MobileNodeRecord",
    "ProtocolError",
    "RegistrationReply",
    "RegistrationRequest",
    "ReplayProtection",
    "ReplyAddress",
    "ReplyCode",
    "RequestFlags",
    "ReverseTunnelPolicy",
    "RevocationSupport",
    "SecurityAssociation",
    "SecurityViolation",
    "SkippedExtension",
    "UdpTunnelReply",
    "UdpTunnelRequest",
    "Verdict",
    "build_reply",
    "compute_authenticator",
    "decide",
    "encode_malformed_reply",
    "encode_reply",
    "ntp_timestamp",
    "pull_message",
    "pull_registration_reply",
    "pull_registration_request",
    "push_registration_reply",
    "push_registration_request",
    "reply_address",
    "unix_time",
    "verify",
    "with_home_address",
]

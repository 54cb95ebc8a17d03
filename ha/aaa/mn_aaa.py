"""The MN-AAA authentication extension (type 36, subtype 1) as RADIUS CHAP attributes, sans-I/O.

RFC 4721 §8 (as RFC 3012 §8 before it), "SPI For RADIUS AAA Servers": with SPI ``CHAP_SPI`` (2) the
mobile node computes its MN-AAA authenticator as

    MD5(high-order byte of the Challenge || Key || MD5(Preceding Mobile IP data || Type, Subtype,
        Length, SPI) || least-order 237 bytes of the Challenge)

which is exactly a CHAP response (RFC 1994 §4.1: MD5(Identifier || secret || challenge)) with
Identifier = the challenge's first byte and challenge = MD5(...) || the challenge's remaining bytes.
The home agent therefore forwards, without knowing the key (RFC 2865 §5.3, §5.40):

* CHAP-Password = Identifier || the 16-byte MN-AAA authenticator;
* CHAP-Challenge = MD5(the request up to and including the extension's SPI) || Challenge[1:238].

The Challenge is the MN-FA Challenge extension (132) that precedes the MN-AAA extension (RFC 4721 §3.2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ha.protocol.auth import covered_length
from ha.protocol.messages import GeneralizedAuth, MobileForeignChallenge, RegistrationRequest

CHAP_SPI = 2  # RFC 4721 §8 / RFC 3012 §8
_MAX_CHALLENGE_TAIL = 237


class MnAaaUnusable(ValueError):
    """The request's MN-AAA extension cannot be checked through RADIUS (the reason says why)."""


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """What replaces User-Password in the Access-Request of an MN-AAA registration."""

    chap_password: bytes  # Identifier || 16-byte response
    chap_challenge: bytes


def mn_aaa_extension(request: RegistrationRequest) -> GeneralizedAuth | None:
    for extension in request.extensions:
        if type(extension) is GeneralizedAuth and extension.is_mn_aaa:
            return extension
    return None


def chap_credentials(request: RegistrationRequest) -> ChapCredentials:
    """The CHAP attributes for the request's MN-AAA extension; MnAaaUnusable when it has none that fits."""
    extension = mn_aaa_extension(request)
    if extension is None:
        raise MnAaaUnusable("no MN-AAA extension")
    if extension.spi != CHAP_SPI:
        raise MnAaaUnusable(f"MN-AAA SPI {extension.spi} is not CHAP_SPI (2): RADIUS cannot check it")
    if len(extension.authenticator) != 16:
        raise MnAaaUnusable("MN-AAA authenticator is not 16 bytes (MD5)")
    challenge = None
    for other in request.extensions:
        if other is extension:
            break
        if type(other) is MobileForeignChallenge:
            challenge = other.challenge
    if challenge is None:
        raise MnAaaUnusable("no MN-FA Challenge extension precedes the MN-AAA extension")
    covered = request.raw[: covered_length(extension)]
    digest = hashlib.md5(covered).digest()
    return ChapCredentials(
        chap_password=challenge[:1] + extension.authenticator,
        chap_challenge=digest + challenge[1 : 1 + _MAX_CHALLENGE_TAIL],
    )


def mn_aaa_authenticator(covered: bytes, challenge: bytes, secret: bytes) -> bytes:
    """What a mobile node puts in its MN-AAA extension (``covered`` = the request up to the SPI)."""
    inner = hashlib.md5(covered).digest()
    return hashlib.md5(challenge[:1] + secret + inner + challenge[1 : 1 + _MAX_CHALLENGE_TAIL]).digest()

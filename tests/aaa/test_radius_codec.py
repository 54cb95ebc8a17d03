"""RADIUS bytes and MN-AAA CHAP, sans-I/O, checked against pyrad (an independent implementation)."""

from __future__ import annotations

import hashlib
import os
import time
from ipaddress import IPv4Address

import pytest
from pyrad.packet import AuthPacket, Packet

from ha.aaa import radius
from ha.aaa.mn_aaa import MnAaaUnusable, chap_credentials
from ha.aaa.profile import AnswerUnusable, profile_from_accept
from ha.mn.session import UNSPECIFIED, MobileNodeSession
from ha.protocol import SecurityAssociation, pull_registration_request

SECRET = b"testing123"


def test_user_password_hiding_matches_pyrad() -> None:
    authenticator = os.urandom(16)
    ours = radius.encrypt_password(b"lookup-pass", SECRET, authenticator)
    theirs = AuthPacket(secret=SECRET, authenticator=authenticator).PwCrypt("lookup-pass")
    assert ours == theirs


def test_salt_encryption_round_trips_and_rejects_bad_salt() -> None:
    authenticator = os.urandom(16)
    value = radius.encrypt_salted(b"3gpp2-key-0123456789", SECRET, authenticator, b"\x80\x01")
    assert radius.decrypt_salted(value, SECRET, authenticator) == b"3gpp2-key-0123456789"
    theirs = Packet(secret=SECRET, authenticator=authenticator).SaltDecrypt(value)
    assert theirs.rstrip(b"\0") == b"3gpp2-key-0123456789"
    with pytest.raises(radius.RadiusError):
        radius.decrypt_salted(b"\x00\x01" + value[2:], SECRET, authenticator)  # salt's top bit clear


def accept_for(request: bytes, attributes: bytes, secret: bytes = SECRET) -> radius.Packet:
    return radius.parse(radius.answer(radius.Code.ACCESS_ACCEPT, radius.parse(request), secret, attributes))


def test_access_request_and_answer_authenticators() -> None:
    authenticator = os.urandom(16)
    request = radius.access_request(7, authenticator, SECRET, radius.attribute(1, b"a@b"), password=b"x")
    parsed = radius.parse(request)
    assert parsed.code == 1 and parsed.identifier == 7 and parsed.get(radius.Attr.USER_NAME) == b"a@b"
    answer = accept_for(request, b"")
    assert radius.verify_answer(answer, SECRET, authenticator, require_message_authenticator=True)
    assert not radius.verify_answer(answer, b"other", authenticator, require_message_authenticator=True)
    forged = accept_for(request, b"", b"other")
    assert not radius.verify_answer(forged, SECRET, authenticator, require_message_authenticator=True)
    # A correct Response Authenticator without a Message-Authenticator is refused (BlastRADIUS).
    raw = bytearray(radius.HEADER.pack(2, 7, 20, authenticator))
    raw[4:20] = hashlib.md5(bytes(raw) + SECRET).digest()
    bare = radius.parse(bytes(raw))
    assert not radius.verify_answer(bare, SECRET, authenticator, require_message_authenticator=True)
    assert radius.verify_answer(bare, SECRET, authenticator, require_message_authenticator=False)


def test_profile_from_erx_and_3gpp2_and_what_is_unusable() -> None:
    authenticator = os.urandom(16)
    request = radius.access_request(1, authenticator, SECRET, b"")
    erx = (
        radius.vsa(4874, 85, radius.u32(300))
        + radius.vsa(4874, 86, b"k" * 16)
        + radius.vsa(4874, 89, radius.u32(90))
        + radius.attribute(radius.Attr.FRAMED_IP_ADDRESS, IPv4Address("10.0.0.9").packed)
    )
    profile = profile_from_accept(
        accept_for(request, erx),
        nai="n",
        secret=SECRET,
        request_authenticator=authenticator,
        pools=frozenset(),
    )
    assert (profile.spi, profile.key, profile.lifetime, str(profile.home_address)) == (
        300,
        b"k" * 16,
        90,
        "10.0.0.9",
    )
    salted = radius.encrypt_salted(b"s" * 20, SECRET, authenticator, b"\x81\x02")
    tgpp2 = (
        radius.vsa(5535, 57, radius.u32(301))
        + radius.vsa(5535, 58, salted)
        + radius.attribute(radius.Attr.FRAMED_POOL, b"p")
    )
    profile = profile_from_accept(
        accept_for(request, tgpp2),
        nai="n",
        secret=SECRET,
        request_authenticator=authenticator,
        pools=frozenset({"p"}),
    )
    assert (profile.key, profile.pool, profile.key_source) == (b"s" * 20, "p", "3gpp2")
    for attributes, pools in (
        (radius.attribute(radius.Attr.FRAMED_IP_ADDRESS, bytes(4)), frozenset()),  # no key
        (tgpp2, frozenset()),  # a pool this VR does not have
        (radius.vsa(4874, 85, radius.u32(300)) + radius.vsa(4874, 86, b"short"), frozenset()),
    ):
        with pytest.raises(AnswerUnusable):
            profile_from_accept(
                accept_for(request, attributes),
                nai="n",
                secret=SECRET,
                request_authenticator=authenticator,
                pools=pools,
            )


def test_mn_aaa_chap_is_what_a_chap_server_checks() -> None:
    """RADIUS CHAP (RFC 2865 §5.3): MD5(ident || password || challenge) must equal the CHAP response."""
    secret = b"mn-aaa-secret"
    session = MobileNodeSession(
        IPv4Address("10.0.0.1"),
        UNSPECIFIED,
        IPv4Address("10.9.9.9"),
        SecurityAssociation(300, b"k" * 16),
        nai="chap@example.net",
        mn_aaa_secret=secret,
    )
    request = pull_registration_request(session.build(session.next_identification(time.time())))
    chap = chap_credentials(request)
    ident, response = chap.chap_password[:1], chap.chap_password[1:]
    assert hashlib.md5(ident + secret + chap.chap_challenge).digest() == response
    assert hashlib.md5(ident + b"wrong" + chap.chap_challenge).digest() != response
    no_aaa = MobileNodeSession(
        IPv4Address("10.0.0.1"),
        UNSPECIFIED,
        IPv4Address("10.9.9.9"),
        SecurityAssociation(300, b"k" * 16),
        nai="x",
    )
    with pytest.raises(MnAaaUnusable):
        chap_credentials(pull_registration_request(no_aaa.build(no_aaa.next_identification(time.time()))))

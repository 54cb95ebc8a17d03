"""ha.protocol.codec: bytes <-> messages, truncation, trailing data, structure rules, fuzzing."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_support import HA, HOA, KEY

from ha.protocol import (
    CriticalVendorExtension,
    ExtensionType,
    ForeignHomeAuth,
    GeneralizedAuth,
    MobileForeignAuth,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    ProtocolError,
    RegistrationReply,
    RegistrationRequest,
    ReplyCode,
    RequestFlags,
    RevocationSupport,
    SecurityAssociation,
    SkippedExtension,
    UdpTunnelReply,
    UdpTunnelRequest,
    encode_malformed_reply,
    pull_message,
    pull_registration_reply,
    pull_registration_request,
    push_registration_reply,
    push_registration_request,
)
from ha.protocol.messages import LAYOUT_MN_HA, LAYOUT_OTHER, LAYOUT_UDP_TUNNEL

# protocol-notes §5: covered bytes of a request and a reply, and their HMAC-MD5 authenticators.
RRQ_COVERED = bytes.fromhex("010007080a0000050a000001c000020ae8fe6f8012345678201400000100")
RRQ_HMAC = bytes.fromhex("7ad22bac05123c92ff97831ec8ecb6a8")
RRP_COVERED = bytes.fromhex("030003840a0000050a000001e8fe6f8012345678201400000100")
RRP_HMAC = bytes.fromhex("281399feb4ece9d99f016606dea17524")
SA = SecurityAssociation(256, KEY)


def vector_request(extensions: tuple = (MobileHomeAuth(256),)) -> RegistrationRequest:
    return RegistrationRequest(
        RequestFlags.NONE, 1800, HOA, HA, IPv4Address("192.0.2.10"), 0xE8FE6F8012345678, extensions
    )


def full_request() -> RegistrationRequest:
    """A request using every extension the codec models, in RFC 5944 §3.6.1.3 order."""
    return RegistrationRequest(
        RequestFlags.S | RequestFlags.T | RequestFlags.G,
        600,
        IPv4Address(0),
        HA,
        IPv4Address("192.0.2.10"),
        0x0123456789ABCDEF,
        (
            MobileNodeNai("alice@example.net"),
            UdpTunnelRequest(flags=UdpTunnelRequest.F_FORCE, encapsulation=4),
            SkippedExtension(139, b"\x01\x0a\x00\x00\x02"),
            MobileHomeAuth(256, bytes(range(16))),
            MobileForeignChallenge(b"\xaa" * 8),
            CriticalVendorExtension(5535, 1, b"vendor"),
            MobileForeignAuth(300, bytes(16)),
            RevocationSupport(RevocationSupport.I_BIT, 1234567),
            ForeignHomeAuth(400, b"\x55" * 16),
        ),
    )


class TestVectors:
    def test_request_matches_the_reference_bytes(self) -> None:
        data = push_registration_request(vector_request(), sign={ExtensionType.MN_HA_AUTH: SA})
        assert data == RRQ_COVERED + RRQ_HMAC

    def test_reply_matches_the_reference_bytes(self) -> None:
        reply = RegistrationReply(0, 900, HOA, HA, 0xE8FE6F8012345678, (MobileHomeAuth(256),))
        assert push_registration_reply(reply, sign={ExtensionType.MN_HA_AUTH: SA}) == RRP_COVERED + RRP_HMAC

    def test_reference_request_decodes_field_by_field(self) -> None:
        request = pull_registration_request(RRQ_COVERED + RRQ_HMAC)
        assert request.flags == RequestFlags.NONE
        assert request.lifetime == 1800
        assert request.home_address == HOA
        assert request.home_agent == HA
        assert request.care_of_address == IPv4Address("192.0.2.10")
        assert request.identification == 0xE8FE6F8012345678
        assert request.extensions == (MobileHomeAuth(256, RRQ_HMAC),)
        assert request.mn_ha_auth is not None and request.mn_ha_auth.offset == 24

    def test_signing_with_the_wrong_spi_is_refused(self) -> None:
        with pytest.raises(ValueError, match="SPI"):
            push_registration_request(
                vector_request((MobileHomeAuth(999),)), sign={ExtensionType.MN_HA_AUTH: SA}
            )


class TestRoundTrip:
    def test_every_modelled_extension_round_trips(self) -> None:
        request = full_request()
        data = push_registration_request(request)
        assert pull_registration_request(data) == request
        assert push_registration_request(pull_registration_request(data)) == data

    def test_generalized_auth_uses_the_long_format(self) -> None:
        request = vector_request((MobileNodeNai("a@b"), GeneralizedAuth(1, 0x1000, b"\x01" * 16)))
        data = push_registration_request(request)
        # NAI ext (2 + 3) then 36 | subtype 1 | length 0x0014 | SPI
        assert data[29:33] == bytes([36, 1, 0, 20])
        parsed = pull_registration_request(data)
        assert parsed == request
        assert parsed.extensions[1].offset == 29

    def test_cvse_reserved_byte_and_16_bit_length(self) -> None:
        data = push_registration_request(vector_request((CriticalVendorExtension(5535, 7, b"x" * 300),)))
        assert data[24:28] == bytes([38, 0]) + (306).to_bytes(2, "big")
        assert pull_registration_request(data).extensions[0].value == b"x" * 300

    def test_reply_round_trip_with_udp_tunnel_reply(self) -> None:
        reply = RegistrationReply(
            1,
            300,
            HOA,
            HA,
            7,
            (MobileNodeNai("a@b"), UdpTunnelReply(0, 110), MobileHomeAuth(256, bytes(16))),
        )
        assert pull_registration_reply(push_registration_reply(reply)) == reply

    def test_pull_message_dispatches_on_the_type_byte(self) -> None:
        assert isinstance(pull_message(push_registration_request(vector_request())), RegistrationRequest)
        reply = RegistrationReply(0, 1, HOA, HA, 1)
        assert isinstance(pull_message(push_registration_reply(reply)), RegistrationReply)
        for data in (b"", b"\x04\x04\x00\x00", b"\x07" + bytes(30)):
            with pytest.raises(ProtocolError) as info:
                pull_message(data)
            assert info.value.discard


class TestTruncationAndTrailingData:
    """Like h11's ``tr()``: every prefix, and the message with data after it."""

    def test_every_prefix_is_refused_or_parses_to_fewer_extensions(self) -> None:
        data = push_registration_request(full_request())
        boundaries = {24}
        offset = 24
        for extension in full_request().extensions:
            offset += len(push_registration_request(vector_request((extension,)))) - 24
            boundaries.add(offset)
        for cut in range(len(data)):
            prefix = data[:cut]
            if cut < 24:
                with pytest.raises(ProtocolError) as info:
                    pull_registration_request(prefix)
                assert info.value.discard, cut
                assert encode_malformed_reply(info.value) is None
            elif cut in boundaries:
                try:
                    parsed = pull_registration_request(prefix)
                except ProtocolError as error:  # only the structure rule about 34 may trip
                    assert error.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST
                else:
                    assert parsed.extensions == full_request().extensions[: len(parsed.extensions)]
            else:
                with pytest.raises(ProtocolError) as info:
                    pull_registration_request(prefix)
                assert info.value.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST, cut
                assert info.value.header == full_request().header()

    def test_one_trailing_byte_is_a_truncated_extension(self) -> None:
        data = push_registration_request(vector_request()) + b"\x83"
        with pytest.raises(ProtocolError) as info:
            pull_registration_request(data)
        assert info.value.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST

    def test_trailing_unknown_non_skippable_extension_discards(self) -> None:
        data = push_registration_request(vector_request()) + bytes([5, 2, 0, 0])
        with pytest.raises(ProtocolError) as info:
            pull_registration_request(data)
        assert info.value.discard and info.value.header is None

    def test_unknown_non_skippable_in_the_middle_discards(self) -> None:
        middle = bytes([47, 1, 0, 1, 9])  # PMIPv4 non-skippable: not understood here
        data = push_registration_request(vector_request(())) + middle + bytes([32, 20]) + bytes(20)
        with pytest.raises(ProtocolError) as info:
            pull_registration_request(data)
        assert info.value.discard

    def test_trailing_skippable_extension_is_kept(self) -> None:
        data = push_registration_request(vector_request()) + bytes([200, 3, 1, 2, 3])
        parsed = pull_registration_request(data)
        assert parsed.extensions[-1] == SkippedExtension(200, b"\x01\x02\x03")
        assert push_registration_request(parsed) == data

    def test_extension_longer_than_the_datagram(self) -> None:
        data = push_registration_request(vector_request(())) + bytes([131, 10]) + b"abc"
        with pytest.raises(ProtocolError, match="past the end") as info:
            pull_registration_request(data)
        assert info.value.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST


class TestPoorlyFormed:
    @pytest.mark.parametrize(
        "extensions",
        [
            (MobileNodeNai("a@b"), MobileNodeNai("c@d"), MobileHomeAuth(256, bytes(16))),
            (MobileHomeAuth(256, bytes(16)), MobileHomeAuth(256, bytes(16))),
            (MobileHomeAuth(256, bytes(16)), MobileNodeNai("late@nai")),
            (ForeignHomeAuth(256, bytes(16)),),
            (ForeignHomeAuth(256, bytes(16)), MobileHomeAuth(256, bytes(16))),
            (MobileHomeAuth(256, bytes(16)), GeneralizedAuth(1, 256, bytes(16))),
            (GeneralizedAuth(1, 256, bytes(16)), GeneralizedAuth(1, 256, bytes(16))),
            (MobileForeignChallenge(b"1"), MobileForeignChallenge(b"2"), MobileHomeAuth(256)),
            (MobileHomeAuth(256), MobileForeignAuth(1), MobileForeignAuth(2)),
            (MobileHomeAuth(256), ForeignHomeAuth(1, bytes(16)), ForeignHomeAuth(2, bytes(16))),
            (GeneralizedAuth(1, 256, bytes(16)), MobileHomeAuth(256, bytes(16))),
        ],
        ids=[
            "duplicate-nai",
            "duplicate-mn-ha",
            "nai-after-mn-ha",
            "fa-ha-alone",
            "fa-ha-before-mn-ha",
            "mn-ha-and-mn-aaa",
            "duplicate-mn-aaa",
            "duplicate-challenge",
            "duplicate-mn-fa",
            "duplicate-fa-ha",
            "mn-aaa-and-mn-ha",
        ],
    )
    def test_structure_rules(self, extensions: tuple) -> None:
        data = push_registration_request(vector_request(extensions))
        with pytest.raises(ProtocolError) as info:
            pull_registration_request(data)
        assert info.value.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST
        reply = pull_registration_reply(encode_malformed_reply(info.value) or b"")
        assert (reply.code, reply.lifetime, reply.home_address, reply.identification) == (
            134,
            0,
            HOA,
            0xE8FE6F8012345678,
        )
        assert reply.extensions == ()

    @pytest.mark.parametrize(
        "tail",
        [
            bytes([32, 3, 0, 0, 1]),  # authentication extension shorter than its SPI
            bytes([36, 1, 0, 2, 0, 0]),  # generalized auth shorter than its SPI
            bytes([38, 0, 0, 4, 0, 0, 0, 1]),  # CVSE without a vendor type
            bytes([131, 0]),  # empty NAI
            bytes([131, 2, 0xFF, 0xFE]),  # NAI that is not UTF-8
            bytes([132, 0]),  # empty challenge
            bytes([144, 4, 0, 0, 0, 4]),  # UDP tunnel request of the wrong length
            bytes([137, 2, 0x80, 0]),  # revocation support of the wrong length
            bytes([44, 7]) + bytes(7),  # UDP tunnel reply of the wrong length
            bytes([36, 1, 0]),  # truncated long header
        ],
    )
    def test_bad_extension_bodies(self, tail: bytes) -> None:
        with pytest.raises(ProtocolError) as info:
            pull_registration_request(push_registration_request(vector_request(())) + tail)
        assert info.value.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST

    def test_reply_with_two_mn_ha_extensions_is_refused(self) -> None:
        reply = RegistrationReply(0, 1, HOA, HA, 1, (MobileHomeAuth(256, bytes(16)),) * 2)
        with pytest.raises(ProtocolError):
            pull_registration_reply(push_registration_reply(reply))

    def test_request_type_byte_is_checked(self) -> None:
        with pytest.raises(ProtocolError) as info:
            pull_registration_request(b"\x03" + bytes(23))
        assert info.value.discard
        with pytest.raises(ProtocolError):
            pull_registration_reply(b"\x01" + bytes(23))


class TestConstruction:
    """Messages validate on construction, like h11 events, so every message object can be encoded."""

    @pytest.mark.parametrize(
        "build",
        [
            lambda: RegistrationRequest(RequestFlags.NONE, 70000, HOA, HA, HOA, 0),
            lambda: RegistrationRequest(RequestFlags.NONE, 1, HOA, HA, HOA, 1 << 64),
            lambda: RegistrationRequest(RequestFlags.NONE, 1, "10.0.0.1", HA, HOA, 0),
            lambda: RegistrationReply(256, 1, HOA, HA, 0),
            lambda: MobileHomeAuth(1 << 32),
            lambda: MobileHomeAuth(256, b"x" * 252),
            lambda: MobileNodeNai(""),
            lambda: MobileNodeNai("n" * 256),
            lambda: SkippedExtension(127, b""),
            lambda: MobileForeignChallenge(b""),
            lambda: RevocationSupport(1 << 16, 0),
        ],
    )
    def test_invalid_fields_are_refused(self, build) -> None:
        with pytest.raises((ValueError, TypeError)):
            build()

    def test_flags_are_normalised_to_the_enum(self) -> None:
        request = RegistrationRequest(0x85, 1, HOA, HA, HOA, 0)
        assert request.flags == RequestFlags.S | RequestFlags.R | RequestFlags.X
        assert isinstance(request.flags, RequestFlags)


# --- property tests ----------------------------------------------------------------------------------

addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
modelled_types = {t.value for t in ExtensionType}
skippable_ext = st.builds(
    SkippedExtension, st.integers(128, 255).filter(lambda t: t not in modelled_types), st.binary(max_size=40)
)
u32 = st.integers(0, 2**32 - 1)
middle_ext = st.one_of(
    skippable_ext,
    st.builds(UdpTunnelRequest, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.builds(
        CriticalVendorExtension, st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1), st.binary(max_size=40)
    ),
    st.builds(RevocationSupport, st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)),
    st.builds(MobileForeignChallenge, st.binary(min_size=1, max_size=32)),
)
requests = st.builds(
    lambda flags, life, hoa, ha, coa, ident, nai, middle, auth: RegistrationRequest(
        RequestFlags(flags),
        life,
        hoa,
        ha,
        coa,
        ident,
        (*((MobileNodeNai(nai),) if nai else ()), *middle, *auth),
    ),
    st.integers(0, 255),
    st.integers(0, 65535),
    addresses,
    addresses,
    addresses,
    st.integers(0, 2**64 - 1),
    st.text(min_size=0, max_size=30).filter(lambda s: len(s.encode()) <= 255),
    st.lists(middle_ext, max_size=4, unique_by=type),
    st.one_of(
        st.just(()),
        st.builds(
            lambda spi, a: (MobileHomeAuth(spi, a),), st.integers(0, 2**32 - 1), st.binary(max_size=20)
        ),
    ),
)


@settings(max_examples=300, deadline=None, database=None)
@given(requests)
def test_valid_requests_round_trip(request: RegistrationRequest) -> None:
    data = push_registration_request(request)
    parsed = pull_registration_request(data)
    assert parsed == request
    assert push_registration_request(parsed) == data


@settings(max_examples=1500, deadline=None, database=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_ever_raise_protocol_error(data: bytes) -> None:
    for reader in (pull_registration_request, pull_registration_reply, pull_message):
        try:
            message = reader(data)
        except ProtocolError as error:
            assert error.discard or error.header is not None
        else:
            assert message.raw == data


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(min_size=1, max_size=60))
def test_requests_with_random_extension_bytes(tail: bytes) -> None:
    data = push_registration_request(vector_request(())) + tail
    try:
        parsed = pull_registration_request(data)
    except ProtocolError as error:
        assert error.discard or error.reply_code_hint == ReplyCode.POORLY_FORMED_REQUEST
    else:
        assert push_registration_request(parsed) == data


def test_reply_code_helpers_and_error_semantics() -> None:
    from ha.protocol.constants import is_accepted

    assert ReplyCode.ACCEPTED.accepted and ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS.accepted
    assert not ReplyCode.POORLY_FORMED_REQUEST.accepted
    assert is_accepted(1) and not is_accepted(64) and not is_accepted(128)
    header = vector_request().header()
    assert header.extensions == () and header == vector_request(())
    answerable = ProtocolError("bad", reply_code_hint=ReplyCode.POORLY_FORMED_REQUEST, header=header)
    assert not answerable.discard and answerable.header == header
    assert ProtocolError("drop", header=header).header is None  # no hint: nothing to answer with


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.integers(0, 255),
    st.integers(0, 65535),
    addresses,
    addresses,
    addresses,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=16, max_size=16),
)
def test_the_plain_layout_reads_like_any_other(flags, lifetime, hoa, ha, coa, ident, spi, auth) -> None:
    """Fixed part + one 20-byte Mobile-Home extension takes the codec's short cut: same result."""
    request = RegistrationRequest(
        RequestFlags(flags), lifetime, hoa, ha, coa, ident, (MobileHomeAuth(spi, auth),)
    )
    data = push_registration_request(request)
    assert len(data) == 46
    plain = pull_registration_request(data)
    general = pull_registration_request(data + bytes([128, 0]))  # one more (skippable) extension
    assert plain == request and plain.raw == data
    assert general.extensions == (*plain.extensions, SkippedExtension(128))
    assert plain.mn_ha_auth is not None and general.mn_ha_auth is not None
    assert plain.mn_ha_auth.offset == general.mn_ha_auth.offset == 24
    assert plain.integers == general.integers == (int(hoa), int(ha), int(coa))
    assert type(plain.flags) is RequestFlags


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.integers(0, 255),
    addresses,
    addresses,
    st.integers(0, 2**64 - 1),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=16, max_size=16),
)
def test_the_rfc3519_layout_reads_like_any_other(
    flags, hoa, coa, ident, tunnel_flags, encapsulation, subtype, spi, auth
) -> None:
    """UDP Tunnel Request + one 20-byte Mobile-Home extension takes the NAT short cut: same result, and
    the same ``layout`` as the request built by hand; one more extension takes the general path."""
    tunnel = UdpTunnelRequest(tunnel_flags, encapsulation, subtype)
    request = RegistrationRequest(
        RequestFlags(flags), 600, hoa, HA, coa, ident, (tunnel, MobileHomeAuth(spi, auth))
    )
    data = push_registration_request(request)
    assert len(data) == 54
    short = pull_registration_request(data)
    general = pull_registration_request(data + bytes([128, 0]))
    assert short == request and short.raw == data and short.extensions[0] == tunnel
    assert short.layout == request.layout == LAYOUT_UDP_TUNNEL
    assert general.layout == LAYOUT_OTHER and general.extensions[:2] == short.extensions
    assert short.mn_ha_auth is not None and short.mn_ha_auth.offset == 32
    assert short.integers == general.integers


def test_layouts_of_other_shapes() -> None:
    """Only the two usual layouts are marked; the same length with other extensions is not."""
    plain = pull_registration_request(
        push_registration_request(vector_request((MobileHomeAuth(256, bytes(16)),)))
    )
    assert plain.layout == LAYOUT_MN_HA
    nai = vector_request((MobileNodeNai("ab"), MobileHomeAuth(256, bytes(16))))
    data = push_registration_request(nai)
    assert len(data) == 50 and pull_registration_request(data).layout == LAYOUT_OTHER == nai.layout
    swapped = vector_request((MobileHomeAuth(256, bytes(16)), UdpTunnelRequest()))  # 144 after MN-HA
    data = push_registration_request(swapped)
    assert len(data) == 54 and pull_registration_request(data).layout == LAYOUT_OTHER
    assert vector_request(()).layout == LAYOUT_OTHER


def test_a_46_byte_request_of_another_shape_takes_the_general_path() -> None:
    """Same length as the plain layout, but ext 32 is shorter and a skippable extension follows."""
    data = push_registration_request(vector_request((MobileHomeAuth(256, bytes(14)), SkippedExtension(130))))
    assert len(data) == 46 and data[24] == 32
    parsed = pull_registration_request(data)
    assert parsed.extensions == (MobileHomeAuth(256, bytes(14)), SkippedExtension(130))
    truncated = data[:24] + bytes([32, 20]) + data[26:]  # claims 20 bytes, the datagram ends first
    with pytest.raises(ProtocolError):
        pull_registration_request(truncated[:-1])

"""ha.protocol.auth: algorithms against published vectors, and what an authenticator covers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from protocol_support import KEY, Registration

from ha.protocol import (
    AuthAlgorithm,
    ExtensionType,
    ForeignHomeAuth,
    MobileForeignAuth,
    MobileHomeAuth,
    RegistrationRequest,
    ReplayProtection,
    SecurityAssociation,
    compute_authenticator,
    pull_registration_request,
    push_registration_request,
    verify,
)
from ha.protocol.auth import covered_length

# RFC 2202 §2: the seven HMAC-MD5 test cases.
RFC2202 = [
    (b"\x0b" * 16, b"Hi There", "9294727a3638bb1c13f48ef8158bfc9d"),
    (b"Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
    (b"\xaa" * 16, b"\xdd" * 50, "56be34521d144c88dbb8c733f0e8b3f6"),
    (bytes(range(1, 26)), b"\xcd" * 50, "697eaf0aca3a3aea3a75164746ffaa79"),
    (b"\x0c" * 16, b"Test With Truncation", "56461ef2342edc00f9bab995690efd4c"),
    (
        b"\xaa" * 80,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
    ),
    (
        b"\xaa" * 80,
        b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
        "6f630fad67cda0ee1fb1f562db3aa53e",
    ),
]
RRQ_COVERED = bytes.fromhex("010007080a0000050a000001c000020ae8fe6f8012345678201400000100")


@pytest.mark.parametrize(("key", "data", "digest"), RFC2202)
def test_hmac_md5_matches_rfc2202(key: bytes, data: bytes, digest: str) -> None:
    assert compute_authenticator(AuthAlgorithm.HMAC_MD5, key, data).hex() == digest


def test_keyed_md5_prefix_suffix_matches_the_reference_vector() -> None:
    authenticator = compute_authenticator(AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX, KEY, RRQ_COVERED)
    assert authenticator.hex() == "f944552d88fcc3b2a23b80fc746f6bcc"


@pytest.mark.parametrize("algorithm", list(AuthAlgorithm))
def test_a_signed_request_verifies_with_either_algorithm(algorithm: AuthAlgorithm) -> None:
    sa = SecurityAssociation(4096, KEY, algorithm)
    request = Registration(sa=sa).request()
    assert verify(request.raw, request.mn_ha_auth, sa)
    other = SecurityAssociation(4096, KEY, next(a for a in AuthAlgorithm if a != algorithm))
    assert not verify(request.raw, request.mn_ha_auth, other)


def test_every_covered_byte_matters_and_nothing_after_the_extension_does(flip) -> None:
    mn = Registration()
    request = mn.request(after=(MobileForeignAuth(999, bytes(16)),))
    end = covered_length(request.mn_ha_auth)
    assert end == 24 + 6
    offset = request.mn_ha_auth.offset
    for index in range(len(request.raw)):
        tampered = flip(request.raw, index)
        # read the extension back from the tampered bytes at its original place
        extension = MobileHomeAuth(
            spi=int.from_bytes(tampered[offset + 2 : offset + 6], "big"),
            authenticator=tampered[end : end + 16],
            offset=offset,
        )
        # bytes up to the SPI, and the authenticator itself, are protected; the MN-FA extension is not
        assert verify(tampered, extension, mn.sa) == (index >= end + 16), index


def test_foreign_home_authenticator_covers_the_mobile_home_extension(flip) -> None:
    fa_sa = SecurityAssociation(512, bytes.fromhex("ff" * 16))
    mn = Registration(fa_sa=fa_sa)
    request = mn.request()
    assert verify(request.raw, request.fa_ha_auth, fa_sa)
    mn_ha_auth_byte = request.mn_ha_auth.offset + 6
    tampered = pull_registration_request(flip(request.raw, mn_ha_auth_byte))
    assert not verify(tampered.raw, tampered.fa_ha_auth, fa_sa)
    assert not verify(tampered.raw, tampered.mn_ha_auth, mn.sa)


def test_spi_mismatch_and_unparsed_extensions_never_verify() -> None:
    mn = Registration()
    request = mn.request()
    assert not verify(request.raw, request.mn_ha_auth, SecurityAssociation(257, KEY))
    assert not verify(request.raw, MobileHomeAuth(256, request.mn_ha_auth.authenticator), mn.sa)
    assert not verify(b"", request.mn_ha_auth, mn.sa)
    with pytest.raises(ValueError):
        covered_length(ForeignHomeAuth(256))


def test_truncated_authenticator_fails_verification() -> None:
    mn = Registration()
    request = mn.request()
    data = push_registration_request(request.header())
    data += bytes([32, 4 + 8]) + (256).to_bytes(4, "big") + request.mn_ha_auth.authenticator[:8]
    parsed = pull_registration_request(data)
    assert not verify(parsed.raw, parsed.mn_ha_auth, mn.sa)


def test_binary_keys_with_nul_bytes_and_long_keys_work() -> None:
    for key in (bytes(16), b"\x00\xff" * 8, bytes(range(64))):
        sa = SecurityAssociation(300, key)
        request = Registration(sa=sa).request()
        assert verify(request.raw, request.mn_ha_auth, sa)


@pytest.mark.parametrize(
    ("spi", "key"),
    [(255, KEY), (0, KEY), (1 << 32, KEY), (256, b"short key"), (256, "0011223344556677")],
)
def test_invalid_security_associations_are_refused(spi: int, key: bytes) -> None:
    with pytest.raises(ValueError):
        SecurityAssociation(spi, key)


def test_key_is_not_in_the_repr() -> None:
    assert KEY.hex() not in repr(SecurityAssociation(256, KEY))
    assert str(KEY) not in repr(SecurityAssociation(256, KEY))


def test_encoder_signs_only_the_types_it_has_keys_for() -> None:
    sa = SecurityAssociation(256, KEY)
    request = Registration().request().header()
    with_fa = RegistrationRequest(
        request.flags,
        request.lifetime,
        request.home_address,
        request.home_agent,
        request.care_of_address,
        request.identification,
        (MobileHomeAuth(256), ForeignHomeAuth(700, b"\x01" * 16)),
    )
    parsed = pull_registration_request(
        push_registration_request(with_fa, sign={ExtensionType.MN_HA_AUTH: sa})
    )
    assert verify(parsed.raw, parsed.mn_ha_auth, sa)
    assert parsed.fa_ha_auth.authenticator == b"\x01" * 16


@pytest.mark.parametrize("length", [16, 20, 63, 64, 65, 80, 200])
@pytest.mark.parametrize("algorithm", list(AuthAlgorithm))
def test_precomputed_key_state_matches_the_plain_algorithms(algorithm: AuthAlgorithm, length: int) -> None:
    """A SecurityAssociation keeps MD5 states derived from its key; they must give the textbook result,
    including keys longer than MD5's 64-byte block (HMAC hashes those first, RFC 2104 §2)."""
    key = bytes((7 * i + 3) % 256 for i in range(length))
    sa = SecurityAssociation(256, key, algorithm)
    for data in (b"", RRQ_COVERED, bytes(range(256)) * 3):
        expected = (
            hmac.new(key, data, hashlib.md5).digest()
            if algorithm is AuthAlgorithm.HMAC_MD5
            else hashlib.md5(key + data + key).digest()
        )
        assert sa.authenticator(data) == expected
        assert sa.authenticator(data) == compute_authenticator(algorithm, key, data)  # state not consumed


def test_rfc2202_long_key_vectors_through_a_security_association() -> None:
    for key, data, digest in RFC2202:
        if len(key) >= 16:
            assert SecurityAssociation(256, key).authenticator(data).hex() == digest


def test_security_associations_copy_and_pickle_by_value() -> None:
    """The derived MD5 states cannot be pickled; copies are rebuilt from the configured values."""
    import copy
    import pickle

    sa = SecurityAssociation(4096, KEY, AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX, ReplayProtection.NONCE)
    for clone in (copy.deepcopy(sa), copy.copy(sa), pickle.loads(pickle.dumps(sa))):
        assert clone == sa and hash(clone) == hash(sa)
        assert clone.authenticator(b"covered") == sa.authenticator(b"covered")

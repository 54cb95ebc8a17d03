"""ha.protocol.replay: timestamp and nonce identification with an injected clock."""

from __future__ import annotations

import pytest
from protocol_support import WALLCLOCK

from ha.protocol import ReplayProtection
from ha.protocol.replay import (
    check_identification,
    check_nonce,
    check_timestamp,
    is_newer,
    ntp_seconds,
    ntp_timestamp,
    unix_time,
)

NTP_2036 = 2**32 - 2_208_988_800  # Unix time of the NTP era 0 -> 1 rollover (2036-02-07)


def test_ntp_conversion() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(1.5) == ((2_208_988_801 << 32) | (1 << 31))
    assert unix_time(ntp_timestamp(WALLCLOCK + 0.25)) == WALLCLOCK + 0.25
    assert ntp_seconds(NTP_2036) == 0


class TestTimestamps:
    def test_fresh_timestamp_is_echoed_in_full(self) -> None:
        ident = ntp_timestamp(WALLCLOCK) | 0x1234
        verdict = check_timestamp(ident, wallclock=WALLCLOCK, tolerance=7, last_accepted=None)
        assert verdict.ok
        assert verdict.reply_identification == ident
        assert verdict.accepted_identification == ident

    @pytest.mark.parametrize("skew", [-7, -1, 0, 3, 7])
    def test_skew_within_tolerance_is_accepted(self, skew: int) -> None:
        ident = ntp_timestamp(WALLCLOCK + skew)
        assert check_timestamp(ident, wallclock=WALLCLOCK, tolerance=7, last_accepted=None).ok

    @pytest.mark.parametrize("skew", [-3600, -8, 8, 86400])
    def test_skew_beyond_tolerance_gets_our_time_and_their_low_bits(self, skew: int) -> None:
        ident = ntp_timestamp(WALLCLOCK + skew) | 0xCAFE
        verdict = check_timestamp(ident, wallclock=WALLCLOCK, tolerance=7, last_accepted=None)
        assert not verdict.ok
        assert verdict.reply_identification >> 32 == ntp_seconds(WALLCLOCK)
        assert verdict.reply_identification & 0xFFFFFFFF == ident & 0xFFFFFFFF
        assert verdict.accepted_identification is None

    def test_replayed_or_older_identification_is_refused(self) -> None:
        last = ntp_timestamp(WALLCLOCK)
        for ident in (last, last - 1, last - (3 << 32)):
            verdict = check_timestamp(ident, wallclock=WALLCLOCK, tolerance=7, last_accepted=last)
            assert not verdict.ok, hex(ident)
            assert "not newer" in verdict.reason
        assert check_timestamp(last + 1, wallclock=WALLCLOCK, tolerance=7, last_accepted=last).ok

    def test_era_rollover_of_2036(self) -> None:
        before, after = ntp_timestamp(NTP_2036 - 2), ntp_timestamp(NTP_2036 + 2)
        assert after < before  # the raw integers wrap...
        assert is_newer(after, before)  # ...serial arithmetic does not
        verdict = check_timestamp(after, wallclock=NTP_2036 + 1, tolerance=7, last_accepted=before)
        assert verdict.ok
        assert not check_timestamp(before, wallclock=NTP_2036 + 1, tolerance=7, last_accepted=after).ok


class TestNonces:
    def test_first_request_fails_and_receives_a_nonce(self) -> None:
        verdict = check_nonce(0x11111111_22222222, expected_ha_nonce=None, fresh_ha_nonce=0xABCDEF01)
        assert not verdict.ok
        assert verdict.reply_identification == 0xABCDEF01_22222222
        assert verdict.ha_nonce == 0xABCDEF01

    def test_echoed_nonce_is_accepted_and_a_new_one_issued(self) -> None:
        verdict = check_nonce(0xABCDEF01_33333333, expected_ha_nonce=0xABCDEF01, fresh_ha_nonce=0x5)
        assert verdict.ok
        assert verdict.reply_identification == 0x00000005_33333333
        assert verdict.ha_nonce == 5
        assert verdict.accepted_identification == 0xABCDEF01_33333333

    def test_wrong_nonce_is_refused(self) -> None:
        assert not check_nonce(0xABCDEF02_33333333, expected_ha_nonce=0xABCDEF01, fresh_ha_nonce=9).ok

    def test_nonce_must_fit_32_bits(self) -> None:
        with pytest.raises(ValueError):
            check_nonce(0, expected_ha_nonce=None, fresh_ha_nonce=1 << 32)


def test_dispatch_on_the_replay_method() -> None:
    stale = ntp_timestamp(WALLCLOCK - 100)
    common = {"wallclock": WALLCLOCK, "tolerance": 7, "last_accepted": None, "expected_ha_nonce": None}
    assert not check_identification(ReplayProtection.TIMESTAMP, stale, fresh_ha_nonce=1, **common).ok
    assert not check_identification(ReplayProtection.NONCE, stale, fresh_ha_nonce=1, **common).ok
    none = check_identification(ReplayProtection.NONE, stale, fresh_ha_nonce=1, **common)
    assert none.ok and none.reply_identification == stale

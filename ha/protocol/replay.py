"""Identification field replay protection (RFC 5944 §5.7), with the clock passed in.

``wallclock`` is Unix time in seconds (float), read by the caller; nothing here reads a clock or a
random source.  Two methods, chosen per security association:

* **timestamp** (mandatory): the high 32 bits are NTP seconds (since 1900).  A request is fresh when
  its seconds are within ``tolerance`` of the home agent's clock *and* the 64-bit value is greater
  than the last identification accepted from that mobile node.  On a mismatch the reply keeps the
  low 32 bits and puts the home agent's own time in the high 32 so the mobile node can resynchronise.
* **nonce**: the high 32 bits must be the nonce the home agent sent in its last reply; every reply
  carries a fresh home agent nonce in the high half and echoes the mobile node's low half.

Comparisons use serial-number arithmetic (RFC 1982), so the NTP era rollover of 2036 is harmless.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .constants import NTP_UNIX_OFFSET, ReplayProtection

_LOW32 = 0xFFFF_FFFF
_MOD32 = 1 << 32
_MOD64 = 1 << 64
_HALF32 = 1 << 31
_HALF64 = 1 << 63


def ntp_seconds(wallclock: float) -> int:
    """NTP seconds (mod 2**32) of a Unix time."""
    return (math.floor(wallclock) + NTP_UNIX_OFFSET) & _LOW32


def ntp_timestamp(wallclock: float) -> int:
    """A 64-bit NTP timestamp (seconds.fraction) for a Unix time; what a mobile node sends."""
    whole = math.floor(wallclock)
    fraction = int((wallclock - whole) * _MOD32) & _LOW32
    return (((whole + NTP_UNIX_OFFSET) % _MOD32) << 32) | fraction


def unix_time(identification: int) -> float:
    """Inverse of :func:`ntp_timestamp` for the current NTP era (1900-2036)."""
    return (identification >> 32) - NTP_UNIX_OFFSET + (identification & _LOW32) / _MOD32


def is_newer(identification: int, last: int) -> bool:
    """RFC 1982 serial-number "greater than" on 64 bits."""
    return 0 < (identification - last) % _MOD64 < _HALF64


class ReplayVerdict(NamedTuple):
    """Outcome of an identification check (one per request).

    ``reply_identification`` goes into the reply whatever the outcome.  ``accepted_identification``
    is what the engine must remember as the mobile node's latest identification (timestamps) and
    ``ha_nonce`` the nonce it must expect next (nonces); both are None when there is nothing to store.
    A named tuple: immutable, and built on the hot path by ``tuple.__new__`` without a Python call.
    """

    ok: bool
    reply_identification: int
    accepted_identification: int | None = None
    ha_nonce: int | None = None
    reason: str = ""


_verdict = tuple.__new__  # _verdict(ReplayVerdict, (all five fields)): ReplayVerdict(...) without its frame


def check_timestamp(
    identification: int, *, wallclock: float, tolerance: int, last_accepted: int | None
) -> ReplayVerdict:
    """Timestamp method: within ``tolerance`` seconds and newer than ``last_accepted``."""
    now = (math.floor(wallclock) + NTP_UNIX_OFFSET) & _LOW32  # ntp_seconds(), inlined: once per request
    skew = ((identification >> 32) - now) & _LOW32  # RFC 1982 distance, as a signed 32-bit number
    if skew >= _HALF32:
        skew -= _MOD32
    if -tolerance <= skew <= tolerance:
        # is_newer(identification, last_accepted), inlined: this runs for every request
        if last_accepted is None or 0 < (identification - last_accepted) % _MOD64 < _HALF64:
            return _verdict(ReplayVerdict, (True, identification, identification, None, ""))
        reason = "identification not newer than the last accepted one"
    else:
        reason = f"timestamp off by {skew} s (tolerance {tolerance} s)"
    mismatch = (now << 32) | (identification & _LOW32)
    return ReplayVerdict(False, mismatch, reason=reason)


def check_nonce(
    identification: int,
    *,
    expected_ha_nonce: int | None,
    fresh_ha_nonce: int,
    offered_ha_nonce: int | None = None,
) -> ReplayVerdict:
    """Nonce method: the high half must echo a nonce the home agent sent; every reply offers a new one.

    Two nonces are valid: ``expected_ha_nonce``, sent with the last reply to an authentic and fresh
    request, and ``offered_ha_nonce``, sent with the last 133.  On a mismatch the caller keeps the
    expected one and stores the fresh one as offered: a replayed request then costs the real mobile
    node nothing, and a node that lost its nonce resynchronises from the 133 (RFC 5944 §5.7: "the
    reply always provides the mobile node with a new nonce"; docs/protocol-decisions.md §5).
    """
    if not 0 <= fresh_ha_nonce <= _LOW32:
        raise ValueError("a home agent nonce is 32 bits")
    reply = (fresh_ha_nonce << 32) | (identification & _LOW32)
    echoed = identification >> 32
    if echoed != expected_ha_nonce and echoed != offered_ha_nonce:
        return ReplayVerdict(False, reply, ha_nonce=fresh_ha_nonce, reason="home agent nonce does not match")
    return ReplayVerdict(True, reply, accepted_identification=identification, ha_nonce=fresh_ha_nonce)


def check_identification(
    method: ReplayProtection,
    identification: int,
    *,
    wallclock: float,
    tolerance: int,
    last_accepted: int | None,
    expected_ha_nonce: int | None,
    fresh_ha_nonce: int,
    offered_ha_nonce: int | None = None,
) -> ReplayVerdict:
    """Dispatch on the security association's replay method (``none`` accepts and echoes)."""
    if method is ReplayProtection.TIMESTAMP:
        return check_timestamp(
            identification, wallclock=wallclock, tolerance=tolerance, last_accepted=last_accepted
        )
    if method is ReplayProtection.NONCE:
        return check_nonce(
            identification,
            expected_ha_nonce=expected_ha_nonce,
            fresh_ha_nonce=fresh_ha_nonce,
            offered_ha_nonce=offered_ha_nonce,
        )
    return ReplayVerdict(True, identification, accepted_identification=identification)

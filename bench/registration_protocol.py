"""In-process registration decisions per second through ``ha.protocol`` alone (issue 3: >= 100k/s).

The measured path is what ``ha/engine/home_agent.py`` does with one datagram, minus the engine's own
state: ``pull_registration_request`` -> a ``MobileNodeRecord`` carrying the replay state of the
previous request -> ``decide`` (one MN-HA authenticator verified, timestamp replay check) ->
``encode_reply`` (one reply authenticator computed) -> ``reply_address``.  Every request carries a
newer timestamp than the one before, so every decision is a real acceptance (code 0) with a signed
reply; the figures are checked to be so before they are printed.

Baseline, measured in the same run over the same bytes: two bare ``hmac.digest`` calls (the request's
covered bytes and the reply's), i.e. the cryptography alone.  The last column says how many times the
baseline's time each path takes.  Also printed: the keyed-MD5 path, parse only, and keyed-MD5's bare
cryptography.

Run: ``.venv/bin/python bench/registration_protocol.py [--requests N] [--repeat R]``.

``--against REF`` compares this tree's protocol path with the one of a git revision (say ``main``) in
the same run: both run this script's hmac-md5 full path, each in its own process, alternately for
``--rounds`` rounds (alternating spreads the shared box's load over both); the medians are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

# ``ha`` comes from this tree, or (in ``--against``'s child processes) from the tree it extracted.
sys.path.insert(0, os.environ.get("MIPHA_BENCH_TREE") or str(Path(__file__).resolve().parent.parent))

from ha.protocol import (
    Accept,
    Arrival,
    AuthAlgorithm,
    ExtensionType,
    HomeAgentPolicy,
    MobileHomeAuth,
    MobileNodeRecord,
    RegistrationRequest,
    RequestFlags,
    SecurityAssociation,
    decide,
    encode_reply,
    ntp_timestamp,
    pull_registration_reply,
    pull_registration_request,
    push_registration_request,
    reply_address,
    verify,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
HA = IPv4Address("10.0.0.1")
HOA = IPv4Address("10.0.0.5")
COA = IPv4Address("192.0.2.10")
WALLCLOCK = 1_795_680_000.0
NOW = 5_000.0
POLICY = HomeAgentPolicy(address=HA, broadcast_addresses=frozenset({IPv4Address("10.0.0.255")}))
ARRIVAL = Arrival(COA, 40000, HA)


def signed_requests(sa: SecurityAssociation, count: int) -> list[bytes]:
    """``count`` signed requests from one mobile node, each with a newer timestamp (1 µs apart)."""
    first = ntp_timestamp(WALLCLOCK)
    out = []
    for i in range(count):
        request = RegistrationRequest(
            RequestFlags.NONE, 1800, HOA, HA, COA, first + i * 4295, (MobileHomeAuth(sa.spi),)
        )
        out.append(push_registration_request(request, sign={ExtensionType.MN_HA_AUTH: sa}))
    return out


def full_path(sa: SecurityAssociation, datagrams: list[bytes]) -> Callable[[], int]:
    """One pass of parse -> decide -> encode signed reply, as the engine calls it; returns the count.

    The mobile node is bound at COA already (every request renews), as in a steady state.
    """
    policy, arrival, sas = POLICY, ARRIVAL, (sa,)

    def run() -> int:
        last: int | None = None
        for data in datagrams:
            request = pull_registration_request(data)
            record = MobileNodeRecord(
                name="mn1",
                security_associations=sas,
                home_address=HOA,
                care_of_addresses=(COA,),
                last_identification=last,
            )
            verdict = decide(
                request,
                policy=policy,
                mobile_node=record,
                foreign_agent=None,
                arrival=arrival,
                now=NOW,
                wallclock=WALLCLOCK,
                bindings_in_use=1,
            )
            last = verdict.accepted_identification
            encode_reply(verdict)
            reply_address(arrival, policy)
        return len(datagrams)

    return run


def check_full_path(sa: SecurityAssociation, datagrams: list[bytes]) -> None:
    """Refuse to print figures unless the measured path really accepts and signs every request."""
    last = None
    for data in datagrams:
        request = pull_registration_request(data)
        record = MobileNodeRecord("mn1", (sa,), HOA, care_of_addresses=(COA,), last_identification=last)
        verdict = decide(
            request,
            policy=POLICY,
            mobile_node=record,
            foreign_agent=None,
            arrival=ARRIVAL,
            now=NOW,
            wallclock=WALLCLOCK,
            bindings_in_use=1,
        )
        if not isinstance(verdict, Accept) or verdict.code != 0:
            raise SystemExit(f"benchmark set-up is wrong: {verdict}")
        reply = pull_registration_reply(encode_reply(verdict))
        if reply.mn_ha_auth is None or not verify(reply.raw, reply.mn_ha_auth, sa):
            raise SystemExit("benchmark set-up is wrong: the reply is not signed")
        last = verdict.accepted_identification


def parse_only(datagrams: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        for data in datagrams:
            pull_registration_request(data)
        return len(datagrams)

    return run


def baseline(datagrams: list[bytes], algorithm: AuthAlgorithm) -> Callable[[], int]:
    """The cryptography alone: the request's authenticator and one reply-sized authenticator."""
    covered = [data[:30] for data in datagrams]  # fixed part + ext 32 header + SPI
    reply_covered = [data[:4] + data[8:30] for data in datagrams]  # a reply is 4 bytes shorter
    digest, md5 = hmac.digest, hashlib.md5

    if algorithm is AuthAlgorithm.HMAC_MD5:

        def run() -> int:
            for request, reply in zip(covered, reply_covered, strict=True):
                digest(KEY, request, "md5")
                digest(KEY, reply, "md5")
            return len(covered)

    else:

        def run() -> int:
            for request, reply in zip(covered, reply_covered, strict=True):
                md5(KEY + request + KEY).digest()
                md5(KEY + reply + KEY).digest()
            return len(covered)

    return run


def rate(run: Callable[[], int], repeat: int) -> float:
    """Median operations per CPU second over ``repeat`` passes (one warm-up pass first).

    CPU time of this process, not wall time: the box is shared, and time spent descheduled is not
    time the protocol path took.  On an idle machine both are the same.
    """
    run()
    rates = []
    for _ in range(repeat):
        start = time.process_time()
        count = run()
        rates.append(count / (time.process_time() - start))
    return statistics.median(rates)


def full_path_rate(requests: int, repeat: int) -> float:
    """The hmac-md5 full path alone, checked first (what ``--against`` compares)."""
    sa = SecurityAssociation(256, KEY, AuthAlgorithm.HMAC_MD5)
    datagrams = signed_requests(sa, requests)
    check_full_path(sa, datagrams)
    return rate(full_path(sa, datagrams), repeat)


def compare(ref: str, requests: int, repeat: int, rounds: int) -> int:
    """This tree against ``ref``'s ``ha`` package, alternating processes; prints both medians."""
    with tempfile.TemporaryDirectory(prefix="mipha-bench-") as other:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "ha"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", other], input=archive, check=True)
        trees = {f"{ref} (baseline)": other, "this tree": str(ROOT)}
        rates: dict[str, list[float]] = {label: [] for label in trees}
        for _ in range(rounds):
            for label, tree in trees.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--requests", str(requests), "--repeat", str(repeat), "--one"],
                    env={**os.environ, "MIPHA_BENCH_TREE": tree},
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                rates[label].append(float(out))
    base = statistics.median(rates[f"{ref} (baseline)"])
    print(f"parse + decide + signed reply, hmac-md5: {rounds} alternating rounds x {repeat} passes x")
    print(f"{requests} requests, one core, CPU time; median of the rounds' medians")
    print(f"{'tree':<28}{'per second':>12}{'µs each':>9}{'x baseline':>12}")
    for label, measured in rates.items():
        value = statistics.median(measured)
        print(f"{label:<28}{value:>12,.0f}{1e6 / value:>9.2f}{value / base:>12.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per pass")
    parser.add_argument("--repeat", type=int, default=7, help="passes; the median is printed")
    parser.add_argument("--against", metavar="REF", help="compare with this git revision's ha package")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds for --against")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # --against's child
    args = parser.parse_args()
    if args.one:
        print(full_path_rate(args.requests, args.repeat))
        return 0
    if args.against:
        return compare(args.against, args.requests, args.repeat, args.rounds)

    streams = {}
    for algorithm in AuthAlgorithm:
        sa = SecurityAssociation(256, KEY, algorithm)
        streams[algorithm] = (sa, signed_requests(sa, args.requests))
        check_full_path(*streams[algorithm])
    hmac_datagrams = streams[AuthAlgorithm.HMAC_MD5][1]

    def measure(run: Callable[[], int]) -> float:
        return rate(run, args.repeat)

    base = measure(baseline(hmac_datagrams, AuthAlgorithm.HMAC_MD5))
    rows = [("baseline: bare hmac.digest x2, same bytes", base)]
    for algorithm, (sa, datagrams) in streams.items():
        rows.append((f"parse + decide + signed reply, {algorithm}", measure(full_path(sa, datagrams))))
    rows.append(("parse only", measure(parse_only(hmac_datagrams))))
    keyed = AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX
    rows.append(("crypto alone: keyed-MD5 x2, same bytes", measure(baseline(streams[keyed][1], keyed))))

    print(f"ha.protocol in-process, {args.requests} requests x {args.repeat} passes, one core, CPU time")
    print(f"{'path':<56}{'per second':>12}{'µs each':>9}{'x baseline time':>17}")
    for label, measured in rows:
        print(f"{label:<56}{measured:>12,.0f}{1e6 / measured:>9.2f}{base / measured:>17.2f}")
    full = rows[1][1]
    print(f"target >= 100,000/s with hmac-md5: {'met' if full >= 100_000 else 'NOT met'} ({full:,.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

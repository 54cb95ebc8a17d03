"""``mipha mn``: register, re-register, hand over and deregister a mobile node, or load a home agent.

Examples::

    mipha mn --ha 192.0.2.1 --key 00112233445566778899aabbccddeeff register --home 10.1.0.1 --coa 203.0.113.5
    mipha mn --ha 192.0.2.1 --key ... handover --home 10.1.0.1 --coa 203.0.113.9
    mipha mn --ha 192.0.2.1 --key ... deregister --home 10.1.0.1 --all
    mipha mn --ha 192.0.2.1 --key ... sequence --nai alice@example.net --coa 203.0.113.5 --coa2 203.0.113.9
    mipha mn --ha 192.0.2.1 --key ... load --count 10000 --home-start 10.1.0.1 --coa 203.0.113.5 \\
        --rate 20000 --duration 5 --json
    mipha mn --ha 10.1.0.1 --key ... --udp-tunnel register --home 10.1.0.100 --coa 172.16.0.10
    mipha mn --ha 10.1.0.1 --key ... --flags T udp-endpoint --home 10.1.0.100 --coa 172.16.0.10 --netns mn

Exit status: 0 when every transaction got an authenticated accept (``load``: at least one reply and
no timeouts), 1 otherwise, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from ipaddress import IPv4Address

from ha.protocol import RequestFlags, SecurityAssociation
from ha.protocol.constants import REGISTRATION_PORT, AuthAlgorithm, ReplayProtection

from . import udp_tunnel
from .client import RegistrationClient, Result, run_load
from .session import UNSPECIFIED, MobileNodeSession

_FLAG_NAMES = {"S": RequestFlags.S, "B": RequestFlags.B, "D": RequestFlags.D, "M": RequestFlags.M,
               "G": RequestFlags.G, "T": RequestFlags.T}  # fmt: skip


def _flags(text: str) -> RequestFlags:
    flags = RequestFlags.NONE
    for letter in text.replace(",", "").upper():
        if letter not in _FLAG_NAMES:
            raise argparse.ArgumentTypeError(f"unknown flag {letter!r} (use S B D M G T)")
        flags |= _FLAG_NAMES[letter]
    return flags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mipha mn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ha", type=IPv4Address, required=True, help="home agent address (Home Agent field)")
    parser.add_argument("--target", help="where to send (default: --ha)")
    parser.add_argument("--port", type=int, default=REGISTRATION_PORT)
    parser.add_argument("--bind", default="0.0.0.0", help="local address of the simulator's socket")
    parser.add_argument("--spi", type=int, default=256)
    parser.add_argument("--key", type=bytes.fromhex, required=True, help="MN-HA key, hex")
    parser.add_argument(
        "--algorithm", choices=[a.value for a in AuthAlgorithm], default=AuthAlgorithm.HMAC_MD5.value
    )
    parser.add_argument(
        "--replay", choices=["timestamp", "nonce"], default="timestamp", help="replay protection of the SA"
    )
    parser.add_argument(
        "--mn-aaa-secret",
        help="authenticate with the MN-AAA extension (RFC 4721, CHAP_SPI) and this secret instead of MN-HA; "
        "--spi/--key are then the MN-HA association RADIUS gives the home agent (they check the reply)",
    )
    parser.add_argument("--lifetime", type=int, default=600)
    parser.add_argument("--flags", type=_flags, default=RequestFlags.NONE, help="request flags, e.g. ST")
    parser.add_argument("--timeout", type=float, default=1.0, help="first retransmission timeout (s)")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--udp-tunnel", action="store_true", help="ask for UDP tunnelling (RFC 3519 UDP Tunnel Request)"
    )
    parser.add_argument("--udp-force", action="store_true", help="with --udp-tunnel: set F (force)")
    sub = parser.add_subparsers(dest="action", required=True)

    def node_args(p: argparse.ArgumentParser, coa: bool = True) -> None:
        p.add_argument("--home", type=IPv4Address, default=UNSPECIFIED, help="home address (0.0.0.0 + --nai)")
        p.add_argument("--nai", help="NAI (RFC 2794)")
        if coa:
            p.add_argument("--coa", type=IPv4Address, required=True, help="care-of address")

    for name, text in (
        ("register", "register one mobile node"),
        ("reregister", "renew a registration (same as register)"),
        ("handover", "register with a new care-of address"),
    ):
        node_args(sub.add_parser(name, help=text))
    dereg = sub.add_parser("deregister", help="deregister one care-of address, or all (--all)")
    node_args(dereg, coa=False)
    dereg.add_argument("--coa", type=IPv4Address, help="care-of address to deregister")
    dereg.add_argument("--all", action="store_true", help="deregister every binding (CoA = home address)")
    seq = sub.add_parser("sequence", help="register, re-register, hand over, deregister all")
    node_args(seq)
    seq.add_argument("--coa2", type=IPv4Address, required=True, help="care-of address to hand over to")
    endpoint = sub.add_parser(
        "udp-endpoint", help="behind a NAT: register with UDP tunnelling and carry the tunnel until signalled"
    )
    udp_tunnel.add_arguments(endpoint)
    load = sub.add_parser("load", help="N mobile nodes at a target rate")
    load.add_argument("--count", type=int, required=True)
    load.add_argument("--home-start", type=IPv4Address, help="first static home address (consecutive)")
    load.add_argument("--nai-pattern", help="NAI per node with {i} (home address 0.0.0.0), e.g. mn{i}@x")
    load.add_argument("--first-index", type=int, default=1, help="first {i} of --nai-pattern")
    load.add_argument("--coa", type=IPv4Address, required=True)
    load.add_argument("--rate", type=float, default=1000.0, help="requests per second (0 = unpaced)")
    load.add_argument("--duration", type=float, default=5.0)
    load.add_argument("--window", type=int, default=1024, help="most requests in flight")
    return parser


def _sa(args: argparse.Namespace) -> SecurityAssociation:
    return SecurityAssociation(
        args.spi, args.key, AuthAlgorithm(args.algorithm), ReplayProtection(args.replay)
    )


def _session(
    args: argparse.Namespace, home: IPv4Address, coa: IPv4Address, nai: str | None
) -> MobileNodeSession:
    return MobileNodeSession(
        home_agent=args.ha,
        home_address=home,
        care_of_address=coa,
        sa=_sa(args),
        nai=nai,
        lifetime=args.lifetime,
        flags=args.flags,
        udp_tunnel=args.udp_tunnel,
        udp_force=args.udp_force,
        mn_aaa_secret=args.mn_aaa_secret.encode() if args.mn_aaa_secret else None,
    )


async def _single(args: argparse.Namespace) -> list[tuple[str, Result]]:
    target = (args.target or str(args.ha), args.port)
    client = RegistrationClient(target, bind=(args.bind, 0), timeout=args.timeout, retries=args.retries)
    results: list[tuple[str, Result]] = []
    async with client:
        coa = getattr(args, "coa", None) or args.home
        session = _session(args, args.home, coa, args.nai)

        async def step(name: str, *, lifetime: int | None = None, care_of: IPv4Address | None = None) -> bool:
            def build(ident: int) -> bytes:
                return session.build(ident, lifetime=lifetime, care_of_address=care_of)

            result = await client.transact(session, build)
            results.append((name, result))
            outcome = result.outcome
            if outcome is not None and outcome.accepted and session.home_address == UNSPECIFIED:
                session.home_address = outcome.home_address  # adopt the assigned address (RFC 2794)
            return outcome is not None and outcome.accepted and outcome.authenticated

        if args.action in ("register", "reregister", "handover"):
            await step(args.action)
        elif args.action == "deregister":
            if session.home_address == UNSPECIFIED:
                raise SystemExit("deregister needs --home (the assigned address for an NAI node)")
            care_of = session.home_address if args.all or args.coa is None else args.coa
            await step("deregister", lifetime=0, care_of=care_of)
        elif args.action == "sequence":
            ok = await step("register")
            ok = ok and await step("reregister")
            if ok:
                session.care_of_address = args.coa2
                ok = await step("handover")
            if ok:
                await step("deregister", lifetime=0, care_of=session.home_address)
    return results


async def _load(args: argparse.Namespace):
    if (args.home_start is None) == (args.nai_pattern is None):
        raise SystemExit("load needs exactly one of --home-start and --nai-pattern")
    sessions = []
    for i in range(args.count):
        if args.home_start is not None:
            sessions.append(_session(args, args.home_start + i, args.coa, None))
        else:
            session = _session(args, UNSPECIFIED, args.coa, args.nai_pattern.format(i=args.first_index + i))
            session.adopt_home_address = True  # its renewals name the address it was given
            sessions.append(session)
    # The sessions live for the whole run: out of the collector's scans (full collections of them paused
    # the generator 10-31 ms mid-run, and replies waiting meanwhile counted as the home agent's latency).
    gc.collect()
    gc.freeze()
    target = (args.target or str(args.ha), args.port)
    client = RegistrationClient(target, bind=(args.bind, 0), timeout=args.timeout, retries=args.retries)
    async with client:
        return await run_load(client, sessions, rate=args.rate, duration=args.duration, window=args.window)


def _udp_endpoint(args: argparse.Namespace) -> int:
    session = _session(args, args.home, args.coa, None)
    session.udp_tunnel = True
    status, stats = asyncio.run(udp_tunnel.serve(args, session))
    print(json.dumps(stats.as_dict()) if args.json else f"udp tunnel down: {stats.as_dict()}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.action == "udp-endpoint":
        return _udp_endpoint(args)
    if args.action == "load":
        report = asyncio.run(_load(args))
        summary = report.as_dict()
        if args.json:
            print(json.dumps(summary))
        else:
            lat = summary["latency_ms"]
            print(
                f"{report.transactions} transactions, {report.replies} replies in {report.elapsed:.2f} s "
                f"({summary['rate']}/s): accepted {report.accepted}, denied {summary['denied']}, "
                f"timeouts {report.timeouts}, retransmissions {report.retransmissions}"
            )
            print(f"latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}")
        return 0 if report.replies and not report.timeouts else 1
    results = asyncio.run(_single(args))
    ok = all(r.outcome is not None and r.outcome.accepted and r.outcome.authenticated for _, r in results)
    if args.json:
        print(json.dumps({"ok": ok, "steps": [{"step": name, **r.as_dict()} for name, r in results]}))
    else:
        for name, result in results:
            o = result.outcome
            if o is None:
                print(f"{name}: no reply after {result.attempts} attempts")
            else:
                auth = "authenticated" if o.authenticated else "NOT authenticated"
                udp = ""
                if o.udp_tunnel is not None:
                    udp = (
                        f", UDP tunnel code {o.udp_tunnel.code} keepalive {o.udp_tunnel.keepalive_interval} s"
                    )
                print(
                    f"{name}: code {o.code}, lifetime {o.lifetime}, home address {o.home_address}, "
                    f"{auth}, {result.latency * 1000:.2f} ms, {result.attempts} attempt(s){udp}"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

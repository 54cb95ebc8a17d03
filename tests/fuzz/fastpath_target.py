"""Fuzz target: the C path (``ha/_fastpath.c`` through ``ha.fastpath.run``) against the Python path.

One input is one wake-up's batch of up to 16 datagrams for a home agent whose renewal cache holds a
renewal of each of its two nodes (HMAC-MD5 and keyed-MD5, one of them from behind a NAT with the
RFC 3519 layout): records of ``[control, offset, length, bytes...]``.  A record starts from a node's
remembered request (control bit 0x01 picks the node, 0x02 starts from nothing but the record's
bytes), writes its bytes at ``offset``, and may have the harness stamp a fresh Identification (0x04)
and re-sign the MN-HA authenticator with the node's key (0x08: so mutations get past
authentication), send it from another peer (0x10) or truncate it to ``offset`` bytes (0x20).

The batch goes through two engines: one served by the C path (one ``Batch.load``, then
``fastpath.run``), one by the Python path datagram by datagram.  A bug (fuzz_common) is anything
escaping, an error logged, or any difference: the replies (as multisets: the C path's leave after
the batch), the counters, the bindings, the replay state, the entries' last Identification.
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from engine_helpers import HA, Clock, build_request, node, sa, vr_config
from fuzz_common import BugFound, ErrorLog

from ha import _fastpath, fastpath
from ha.engine.home_agent import HomeAgent
from ha.protocol import SecurityAssociation, UdpTunnelRequest
from ha.protocol.constants import AuthAlgorithm

KEYS = (bytes.fromhex("00112233445566778899aabbccddeeff"), bytes(range(100, 180)))
ALGORITHMS = (AuthAlgorithm.HMAC_MD5, AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX)
HOMES = ("10.1.0.1", "10.1.0.2")
COA = "203.0.113.5"
SOURCES = (("203.0.113.5", 434), ("198.51.100.77", 4500), ("203.0.113.9", 434))
PORT = 434


def _config():
    nodes = [
        node(f"mn{i}", HOMES[i], security_associations=[sa(key=KEYS[i], algorithm=ALGORITHMS[i])])
        for i in range(2)
    ]
    return vr_config(nodes, replay_tolerance=7)


class FastpathTarget:
    def __init__(self) -> None:
        self.errors = ErrorLog("ha")
        self.batch = _fastpath.Batch(-1, 256)
        self.sas = [SecurityAssociation(256, KEYS[i], ALGORITHMS[i]) for i in range(2)]

    def close(self) -> None:
        self.errors.close()

    def _request(self, who: int, identification: int) -> bytes:
        return build_request(
            home=HOMES[who], coa=COA, identification=identification, key=KEYS[who], algorithm=ALGORITHMS[who],
            udp_tunnel=UdpTunnelRequest() if who == 1 else None,
        )  # fmt: skip

    def seeds(self) -> list[bytes]:
        def rec(control: int, offset: int, data: bytes) -> bytes:
            return bytes([control, offset, len(data)]) + data

        return [
            rec(0x04 | 0x08, 0, b"") + rec(0x01 | 0x04 | 0x08, 0, b""),
            rec(0x04, 0, b"") + rec(0x01 | 0x04, 30, b"\x00"),
            rec(0x04 | 0x08, 24, b"\x20\x15") + rec(0x04 | 0x08, 0, b"") + rec(0x04 | 0x08 | 0x10, 0, b""),
            rec(0x02, 0, b"\x01\x00\x02\x58") + rec(0x04 | 0x20, 40, b""),
            rec(0x04 | 0x08, 16, b"\xff" * 8) + rec(0x01 | 0x04 | 0x08, 2, b"\x00\x00"),
            rec(0x0C, 0, b"") + rec(0x04, 0, b"") + rec(0x0C, 0, b"") + rec(0x0D, 0, b"") + rec(0x0D, 0, b""),
        ]

    def _engines(self, clock: Clock) -> list[HomeAgent]:
        setup = []  # each node: a registration (remembered), then a renewal in place from the cache
        for who in (0, 0, 1, 1):
            clock.advance(0.01)
            setup.append((self._request(who, clock.timestamp()), SOURCES[who], clock.now, clock.wall))
        engines = []
        for fast in (True, False):
            engine = HomeAgent(_config())
            engine.fast_renewals = fast
            engine.track_changes()
            for data, source, now, wall in setup:
                engine.handle_datagram(
                    data, source=source, received_on=HA, now=now, wallclock=wall, destination_port=PORT
                )
            engines.append(engine)
        return engines

    def one(self, data: bytes) -> None:
        clock = Clock()
        engines = self._engines(clock)
        clock.advance(0.5)
        datagrams: list[tuple[bytes, tuple[str, int]]] = []
        position = 0
        while position + 3 <= len(data) and len(datagrams) < _fastpath.SLOTS:
            control, offset, length = data[position], data[position + 1], data[position + 2]
            chunk = data[position + 3 : position + 3 + length]
            position += 3 + length
            who = control & 0x01
            base = bytearray() if control & 0x02 else bytearray(self._request(who, clock.timestamp()))
            if control & 0x04 and len(base) >= 24:
                clock.advance(0.001)
                base[16:24] = clock.timestamp().to_bytes(8, "big")
            base[offset : offset + len(chunk)] = chunk
            if control & 0x20:
                del base[offset:]
            if control & 0x08 and len(base) >= 16:
                base[-16:] = self.sas[who].authenticator(bytes(base[:-16]))
            datagrams.append((bytes(base), SOURCES[2] if control & 0x10 else SOURCES[who]))
        now, wall = clock.now, clock.wall
        fast, slow = engines

        def out(o):
            return None if o is None else (o.data, o.destination, o.source, o.source_port)

        expected = [
            out(
                slow.handle_datagram(
                    d, source=s, received_on=HA, now=now, wallclock=wall, destination_port=PORT
                )
            )
            for d, s in datagrams
        ]
        got = []

        def python_path(d: bytes, s: tuple[str, int]) -> None:
            got.append(out(fast.handle_datagram(d, source=s, received_on=HA, now=now, wallclock=wall,
                                                destination_port=PORT)))  # fmt: skip

        self.batch.load([(d, int(IPv4Address(s[0])), s[1]) for d, s in datagrams])
        fastpath.run(
            self.batch, fast, fast.renewal_cache, now=now, wallclock=wall, received_on=HA, port=PORT,
            slow=python_path,
        )  # fmt: skip
        got += [(d, to, HA, PORT) for d, to in self.batch.take()]
        self.errors.check()
        if sorted((r for r in got if r is not None), key=repr) != sorted(
            (r for r in expected if r is not None), key=repr
        ):
            raise BugFound(f"replies differ: C path {got!r}, Python path {expected!r}")
        for what in (
            lambda e: e.statistics.as_dict(),
            lambda e: [e.node_statistics(f"mn{i}") for i in range(2)],
            lambda e: [e.replay_state(f"mn{i}") for i in range(2)],
            lambda e: e.bindings_after(None, 10, now=now),
            lambda e: sorted(e.take_changed_bindings()),
        ):
            if what(fast) != what(slow):
                raise BugFound(f"engines differ: {what(fast)!r} vs {what(slow)!r}")
        for renewal in fast.renewal_cache.values():
            if renewal.fast is not None and renewal.fast.last != renewal.identification:
                raise BugFound("an entry's C copy of the last Identification is not the engine's")

"""The binding table in RFC 7951 JSON, written straight from the engine's binding objects.

A RESTCONF GET of 100k bindings converted by libyang from the XML writer's output costs 16 to 44 µs a
binding (parse with every value checked against its type's patterns, then print); this writer is the
JSON twin of :class:`mipha.state_xml.BindingWriter` (same caches, same template approach) and writes
exactly what libyang prints for the same data: members in schema order, keys first, numbers for the
uint16 leaves, the uint64 identification as a string (RFC 7951 §6.1), ``true`` for the boolean,
date-and-time in the local time zone with its offset (libyang's canonical form; the XML has ``Z``),
bits as their names separated by spaces, strings escaped as libyang escapes them (``\\"``, ``\\\\``,
control characters as ``\\u00XX``).  tests/daemon/test_state_json.py compares the two byte for byte.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ha.engine.aaa import AAA_NODE_PREFIX
from ha.engine.bindings import UDP_TUNNEL, Binding

from .state_xml import _FLAG_TEXT, _NTOA, _PACK_U32, ALL_LEAVES, BindingWriter

if TYPE_CHECKING:
    from ipaddress import IPv4Address

    from ha.engine.config import EngineNode
    from ha.engine.home_agent import HomeAgent

_ESCAPES = {i: f"\\u{i:04X}" for i in range(0x20)} | {ord('"'): '\\"', ord("\\"): "\\\\"}
_SPECIAL = frozenset(chr(c) for c in _ESCAPES)


def json_string(text: str) -> str:
    """A JSON string literal as libyang's printer writes it (UTF-8 as is)."""
    if _SPECIAL.isdisjoint(text):
        return f'"{text}"'
    return '"' + text.translate(_ESCAPES) + '"'


class BindingJsonWriter(BindingWriter):
    """Bindings as the comma-separated JSON objects of ``binding`` entries (server/operational.py's
    RawJson), page by page; the XML writer's per-request caches hold JSON text here."""

    def __init__(self, engine: HomeAgent, now: float, interfaces: dict[IPv4Address, str | None]) -> None:
        super().__init__(engine, now, interfaces)
        self.local_seconds: dict[int, tuple[str, str]] = {}
        #: ',"tunnel-interface":"…"' per care-of address that has one
        self.json_interfaces = {
            int(k): f',"tunnel-interface":{json_string(v)}' for k, v in interfaces.items() if v
        }

    def page(self, bindings: Iterable[Binding], leaves: frozenset[str]) -> bytes:
        """One page of entries separated by commas (the caller puts one between pages)."""
        if leaves is not ALL_LEAVES:
            raise ValueError("the JSON writer writes whole bindings")
        ntoa, pack, ceil = _NTOA, _PACK_U32, math.ceil
        address, addresses, nodes = self.shared_address, self.addresses, self.nodes
        seconds = self.local_seconds
        interfaces, flag_text = self.json_interfaces, _FLAG_TEXT
        wall, now = self.wall, self.now
        out: list[str] = []
        append = out.append
        for b in bindings:
            coa = b.care_of_address
            source = b.source >> 16
            name = b.mobile_node
            node: EngineNode | None = nodes.get(name)
            aaa = ""
            if node is None and name.startswith(AAA_NODE_PREFIX):
                node = self.engine.node(name)
                aaa = self.aaa_json(name)
            nai = f',"nai":{json_string(node.nai)}' if node is not None and node.nai else ""
            lifetime, registered = b.lifetime, b.registered
            if lifetime == 0xFFFF:
                remaining = 0xFFFF
            else:
                remaining = ceil(registered + lifetime - now)
                remaining = 0 if remaining < 0 else (lifetime if remaining > lifetime else remaining)
            stamp = registered + wall
            whole = int(stamp)
            prefix = seconds.get(whole)
            if prefix is None:
                prefix = self.local_second(whole)
            micro = int((stamp - whole) * 1_000_000)
            append(
                f'{{"home-address":"{ntoa(pack(b.home_address))}",'
                f'"care-of-address":"{addresses.get(coa) or address(coa)}",'
                f'"mobile-node":{json_string(name)}{nai},'
                f'"source-address":"{addresses.get(source) or address(source)}",'
                f'"lifetime-granted":{lifetime},"lifetime-remaining":{remaining},'
                f'"registered-at":"{prefix[0]}{f".{micro:06d}" if micro else ""}{prefix[1]}",'
                f'"identification":"{b.identification}","flags":"{flag_text[b.flags & 0xFF]}",'
                f'"encapsulation":"{b.encapsulation}"{interfaces.get(coa, "")}{aaa}'
                f"{self.udp_json(b) if b.flags & UDP_TUNNEL else ''}}}"
            )
        return ",".join(out).encode()

    def local_second(self, whole: int) -> tuple[str, str]:
        """A second's date and time, and its UTC offset, in the local time zone: libyang prints
        date-and-time values so (its canonical form: `+00:00`, not `Z`, on a UTC machine)."""
        if len(self.local_seconds) > 4096:
            self.local_seconds.clear()
        local = time.localtime(whole)
        # as libyang's ly_time_time2str: "%+03d:%02d" of C's truncating division and remainder (so a
        # zone west of UTC by a half hour prints "-03:-30"; tests/daemon/test_state_json.py pins it)
        hours = math.trunc(local.tm_gmtoff / 3600)
        minutes = math.trunc(math.fmod(local.tm_gmtoff, 3600) / 60)
        zone = f"{hours:+03d}:{minutes:02d}"
        text = self.local_seconds[whole] = (time.strftime("%Y-%m-%dT%H:%M:%S", local), zone)
        return text

    def aaa_json(self, name: str) -> str:
        subscriber = self.engine.subscriber(name)
        if subscriber is None:
            return ""
        return (
            f',"authentication":"aaa","key-source":"{subscriber.key_source}",'
            f'"address-source":"{subscriber.address_source}",'
            f'"acct-session-id":{json_string(subscriber.session_id)}'
        )

    def udp_json(self, b: Binding) -> str:
        nat = self.address(b.source >> 16)
        return f',"udp-tunnel":true,"nat-address":"{nat}","nat-port":{b.source & 0xFFFF}'

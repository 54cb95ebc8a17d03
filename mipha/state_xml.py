"""The operational state's XML writer: bindings straight to bytes, the other sections as lxml elements.

Bindings are the bulk of a large ``<get>``: :class:`BindingWriter` turns a page of the engine's binding
objects into UTF-8 with one template and small per-request caches (~2.5 µs a binding).  The small sections
(tunnels, statistics, security violations) are lxml elements the provider appends to the reply tree.
"""

from __future__ import annotations

import datetime as dt
import math
import socket
import struct
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, cast
from xml.sax.saxutils import escape

from lxml import etree

from ha.dataplane.base import TunnelCounters
from ha.engine.aaa import AAA_NODE_PREFIX
from ha.engine.bindings import UDP_TUNNEL, Binding
from ha.engine.home_agent import HomeAgent
from ha.engine.statistics import COUNTERS

from .state_filter import BINDING_LEAVES, NS

if TYPE_CHECKING:
    from ha.engine.config import EngineNode

    from .aaa import AaaClient

Q = f"{{{NS}}}"
_FLAG_ORDER = (("S", 0x80), ("B", 0x40), ("D", 0x20), ("M", 0x10), ("G", 0x08), ("T", 0x02))


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


def leaf(parent: etree._Element, name: str, value: object) -> None:
    etree.SubElement(parent, Q + name).text = str(value)


def _flags(bits: int) -> str:
    return " ".join(name for name, mask in _FLAG_ORDER if bits & mask)


def _esc(text: str) -> str:
    if "&" not in text and "<" not in text and ">" not in text:  # the usual case: nothing to do
        return text
    return escape(text)


_FLAG_TEXT = tuple(_flags(bits) for bits in range(256))
_NTOA = socket.inet_ntoa
_PACK_U32 = struct.Struct("!I").pack
ALL_LEAVES = frozenset(BINDING_LEAVES)


class BindingWriter:
    """Writes bindings straight from the engine's binding objects, page by page, with small caches: a
    ``<get>`` of 100k bindings must not build 100k BindingInfo objects, IPv4Address objects or
    datetimes.  What many bindings share (the care-of and source address texts, the encapsulation and
    tunnel-interface leaves, the second of a timestamp) is written once per request."""

    def __init__(self, engine: HomeAgent, now: float, interfaces: dict[IPv4Address, str | None]) -> None:
        self.now = now
        self.wall = engine.wall_offset
        self.engine = engine
        self.nodes = engine.config.mobile_nodes
        self.interfaces = {int(k): _esc(v) for k, v in interfaces.items() if v}
        #: "<tunnel-interface>…</tunnel-interface>" per care-of address that has one
        self.interface_leaves = {
            k: f"<tunnel-interface>{v}</tunnel-interface>" for k, v in self.interfaces.items()
        }
        self.seconds: dict[int, str] = {}
        self.addresses: dict[int, str] = {}  # care-of and source addresses: few, shared by many bindings
        self.encapsulations: dict[str, str] = {}

    @staticmethod
    def address(value: int) -> str:
        return _NTOA(_PACK_U32(value))

    def shared_address(self, value: int) -> str:
        text = self.addresses.get(value)
        if text is None:
            if len(self.addresses) > 4096:  # every mobile node its own care-of address: no sharing
                self.addresses.clear()
            text = self.addresses[value] = _NTOA(_PACK_U32(value))
        return text

    def stamp(self, t: float) -> str:
        whole = int(t)
        prefix = self.seconds.get(whole)
        if prefix is None:
            if len(self.seconds) > 4096:
                self.seconds.clear()
            prefix = self.seconds[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        micro = int((t - whole) * 1_000_000)
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"

    def aaa_leaves(self, name: str) -> tuple[tuple[str, str], ...]:
        """The AAA leaves of an AAA-learnt node's binding (none for a configured node)."""
        subscriber = self.engine.subscriber(name) if name.startswith(AAA_NODE_PREFIX) else None
        if subscriber is None:
            return ()
        return (
            ("authentication", "aaa"),
            ("key-source", subscriber.key_source),
            ("address-source", subscriber.address_source),
            ("acct-session-id", _esc(subscriber.session_id)),
        )

    def node(self, name: str) -> tuple[str, str | None]:
        node = self.nodes.get(name) or self.engine.node(name)
        nai = node.nai if node is not None else None
        return _esc(name), (_esc(nai) if nai else None)

    def remaining(self, b: Binding) -> int:
        """Whole seconds left at the request's time; at most the lifetime granted (a streamed reply
        may meet a binding renewed after the request arrived)."""
        if b.lifetime == 0xFFFF:
            return 0xFFFF
        return max(0, min(b.lifetime, math.ceil(b.registered + b.lifetime - self.now)))

    def page(self, bindings: Iterable[Binding], leaves: frozenset[str]) -> bytes:
        """One page of ``<binding>`` elements as UTF-8.  Every leaf selected (the common case) is
        one template with the per-binding work inlined: ~2.5 µs a binding, the bulk of a 100k get."""
        if leaves is not ALL_LEAVES:
            return "".join(self.selected(b, leaves) for b in bindings).encode()
        ntoa, pack, ceil, strftime, gmtime = _NTOA, _PACK_U32, math.ceil, time.strftime, time.gmtime
        address, addresses, seconds, nodes = self.shared_address, self.addresses, self.seconds, self.nodes
        interface_leaves, encapsulations, flag_text = self.interface_leaves, self.encapsulations, _FLAG_TEXT
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
                aaa = "".join(f"<{leaf}>{value}</{leaf}>" for leaf, value in self.aaa_leaves(name))
            nai = f"<nai>{escape(node.nai)}</nai>" if node is not None and node.nai else ""
            if "&" in name or "<" in name or ">" in name:
                name = escape(name)
            encapsulation = encapsulations.get(b.encapsulation)
            if encapsulation is None:
                text = f"<encapsulation>{b.encapsulation}</encapsulation>"
                encapsulation = encapsulations[b.encapsulation] = text
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
                if len(seconds) > 4096:
                    seconds.clear()
                prefix = seconds[whole] = strftime("%Y-%m-%dT%H:%M:%S", gmtime(whole))
            micro = int((stamp - whole) * 1_000_000)
            append(
                f'<binding xmlns="{NS}"><home-address>{ntoa(pack(b.home_address))}</home-address>'
                f"<care-of-address>{addresses.get(coa) or address(coa)}</care-of-address>"
                f"<mobile-node>{name}</mobile-node>{nai}"
                f"<source-address>{addresses.get(source) or address(source)}</source-address>"
                f"<lifetime-granted>{lifetime}</lifetime-granted>"
                f"<lifetime-remaining>{remaining}</lifetime-remaining>"
                f"<registered-at>{prefix}{f'.{micro:06d}Z' if micro else 'Z'}</registered-at>"
                f"<identification>{b.identification}</identification>"
                f"<flags>{flag_text[b.flags & 0xFF]}</flags>"
                f"{encapsulation}{interface_leaves.get(coa, '')}{aaa}"
                f"{self.udp_leaves(b) if b.flags & UDP_TUNNEL else ''}</binding>"
            )
        return "".join(out).encode()

    def udp_values(self, b: Binding) -> tuple[tuple[str, object], ...]:
        """RFC 3519 leaves of a binding: tunnelled in UDP, and to which NAT mapping."""
        if not b.flags & UDP_TUNNEL:
            return ()
        return (
            ("udp-tunnel", "true"),
            ("nat-address", self.address(b.source >> 16)),
            ("nat-port", b.source & 0xFFFF),
        )

    def udp_leaves(self, b: Binding) -> str:
        return "".join(f"<{leaf}>{value}</{leaf}>" for leaf, value in self.udp_values(b))

    def selected(self, b: Binding, leaves: frozenset[str]) -> str:
        """One binding with its keys and the selected leaves only."""
        name, nai = self.node(b.mobile_node)
        values = (
            ("mobile-node", name),
            ("nai", nai),
            ("source-address", self.address(b.source >> 16)),
            ("lifetime-granted", b.lifetime),
            ("lifetime-remaining", self.remaining(b)),
            ("registered-at", self.stamp(b.registered + self.wall)),
            ("identification", b.identification),
            ("flags", _FLAG_TEXT[b.flags & 0xFF]),
            ("encapsulation", b.encapsulation),
            ("tunnel-interface", self.interfaces.get(b.care_of_address)),
            *self.aaa_leaves(b.mobile_node),
            *self.udp_values(b),
        )
        body = "".join(
            f"<{leaf}>{value}</{leaf}>" for leaf, value in values if value is not None and leaf in leaves
        )
        return (
            f'<binding xmlns="{NS}"><home-address>{self.address(b.home_address)}</home-address>'
            f"<care-of-address>{self.address(b.care_of_address)}</care-of-address>{body}</binding>"
        )


_SERVER_COUNTERS = (
    "requests",
    "accepts",
    "rejects",
    "timeouts",
    "bad-authenticators",
    "unusable-accepts",
    "accounting-requests",
    "accounting-responses",
    "disconnect-requests",
    "coa-requests",
    "status-server-probes",
    "status-server-answers",
)


def write_aaa(parent: etree._Element, engine: HomeAgent, client: AaaClient) -> None:
    """``virtual-router/aaa`` state: per server counters and round-trip time, the engine's AAA counters."""
    for state in client.server_states():
        server = etree.SubElement(parent, Q + "server")
        leaf(server, "address", state.server.address)
        stats = etree.SubElement(server, Q + "statistics")
        for name in _SERVER_COUNTERS:
            leaf(stats, name, getattr(state, name.replace("-", "_")))
        if state.rtt_last_ms is not None and state.rtt_average_ms is not None:
            rtt = etree.SubElement(stats, Q + "round-trip-time")
            leaf(rtt, "last", state.rtt_last_ms)
            leaf(rtt, "average", round(state.rtt_average_ms))
    counters = engine.aaa_counters
    stats = etree.SubElement(parent, Q + "statistics")
    leaf(stats, "lookups", counters.lookups)
    leaf(stats, "absorbed", counters.absorbed)
    leaf(stats, "pending", engine.aaa_pending)
    leaf(stats, "cached-subscribers", engine.aaa_subscribers)
    leaf(stats, "unavailable", counters.unavailable)
    leaf(stats, "overflows", counters.overflows)


def write_tunnels(parent: etree._Element, tunnels: list[TunnelCounters]) -> None:
    for t in sorted(tunnels, key=lambda t: t.care_of_address):
        el = etree.SubElement(parent, Q + "tunnel")
        leaf(el, "care-of-address", t.care_of_address)
        if t.interface:
            leaf(el, "interface", t.interface)
        leaf(el, "binding-count", t.binding_count)
        leaf(el, "in-packets", t.in_packets)
        leaf(el, "in-octets", t.in_octets)
        leaf(el, "out-packets", t.out_packets)
        leaf(el, "out-octets", t.out_octets)


def write_statistics(parent: etree._Element, engine: HomeAgent, since: float) -> None:
    leaf(parent, "discontinuity-time", iso(since))
    leaf(parent, "bindings", engine.binding_count)
    counters = engine.statistics.as_dict()
    by_code = cast("dict[int, int]", counters.pop("denied-by-code"))
    for name in COUNTERS:  # the engine keeps them in the YANG order
        leaf(parent, name, counters[name])
        if name == "denied":
            codes = etree.SubElement(parent, Q + "denied-by-code")
            for code, count in sorted(by_code.items()):
                entry = etree.SubElement(codes, Q + "code")
                leaf(entry, "code", int(code))
                leaf(entry, "count", count)


def write_mobile_node(parent: etree._Element, engine: HomeAgent, name: str) -> None:
    """``mobile-node[name]`` state: its pool-assigned address and its statistics (when it has any)."""
    assigned = engine.assigned_address(name)
    counters = engine.node_statistics(name)
    if assigned is None and counters is None:
        return
    node = etree.SubElement(parent, Q + "mobile-node")
    leaf(node, "name", name)
    if assigned is not None:
        leaf(node, "assigned-address", assigned)
    if counters is not None:
        accepted, denied, code, when = counters
        stats = etree.SubElement(node, Q + "statistics")
        leaf(stats, "accepted", accepted)
        leaf(stats, "denied", denied)
        if code is not None:
            leaf(stats, "last-reply-code", code)
        if when is not None:
            leaf(stats, "last-request-time", iso(when))


def write_violations(parent: etree._Element, engine: HomeAgent) -> None:
    for v in engine.violations:
        el = etree.SubElement(parent, Q + "violation")
        leaf(el, "index", v.index)
        leaf(el, "time", iso(v.time))
        leaf(el, "peer", v.peer)
        home = getattr(v, "home_address", None)
        if home is not None:
            leaf(el, "home-address", home)
        if v.spi is not None:
            leaf(el, "spi", v.spi)
        leaf(el, "reason", v.reason)
        if v.identification is not None:
            leaf(el, "identification", v.identification)
        if v.reply_code is not None:
            leaf(el, "reply-code", v.reply_code)
    for address, totals in sorted(engine.violations.peers.items()):
        el = etree.SubElement(parent, Q + "peer")
        leaf(el, "address", address)
        leaf(el, "count", totals.count)
        leaf(el, "last-time", iso(totals.last_time))

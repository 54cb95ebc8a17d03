"""Operational state of the home agents as YANG XML, built lazily with filters pushed down.

The NETCONF server asks this provider for ``virtual-routers`` state when a ``<get>`` / ``<get-data>``
reply needs it and hands over the request's filter.  What the filter names (mipha/state_filter.py) narrows
what is built; the XML itself is written by mipha/state_xml.py.  Bindings are walked in key order in pages,
each fetched after the previous page's last key, never with a live iterator: a ``<get>`` of the whole table
hands the server a generator of pages that is consumed while the reply is written (server/operational.py),
so registrations go on between pages and memory holds a page, not 50 MB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv4Address
from typing import Protocol

from lxml import etree

from ha.dataplane.base import TunnelCounters
from ha.engine.bindings import Binding
from ha.engine.home_agent import HomeAgent
from server.operational import RawJson, StateRequest, raw_placeholder

from .state_filter import NS, SECTIONS, Wanted, raw_plan, wanted_from
from .state_json import BindingJsonWriter
from .state_xml import (
    ALL_LEAVES,
    BindingWriter,
    Q,
    leaf,
    write_aaa,
    write_mobile_node,
    write_statistics,
    write_tunnels,
    write_violations,
)

_PAGE = 1024


class VirtualRouterState(Protocol):
    """What the provider reads from one running virtual router."""

    name: str
    engine: HomeAgent | None

    def tunnels(self) -> list[TunnelCounters]: ...
    def now(self) -> float: ...
    def discontinuity_time(self) -> float: ...


class HomeAgentStateProvider:
    """The server's :class:`~server.operational.OperationalProvider` for ``mipha:virtual-routers``."""

    roots = frozenset({(NS, "virtual-routers")})

    def __init__(self, routers: Callable[[], Iterable[VirtualRouterState]]) -> None:
        self._routers = routers
        #: Bindings serialised by the last request (tests assert push-down with it).
        self.last_bindings_built = 0

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        wanted = wanted_from(request)
        self.last_bindings_built = 0
        if wanted.nothing:
            return []
        top = etree.Element(Q + "virtual-routers", nsmap={None: NS})
        for vr in self._routers():
            if wanted.routers is not None and vr.name not in wanted.routers:
                continue
            self._virtual_router(top, vr, wanted, request)
        return [top] if len(top) else []

    def _virtual_router(
        self, top: etree._Element, vr: VirtualRouterState, wanted: Wanted, request: StateRequest
    ) -> None:
        engine = vr.engine
        if engine is None:
            return
        entry = etree.SubElement(top, Q + "virtual-router")
        leaf(entry, "name", vr.name)
        if engine.config.home_agent is not None and any(wanted.section(s) for s in SECTIONS):
            ha = etree.SubElement(entry, Q + "home-agent")
            tunnels = vr.tunnels() if (wanted.section("tunnels") or wanted.section("bindings")) else []
            interfaces = {t.care_of_address: t.interface for t in tunnels}
            if wanted.section("bindings"):
                bindings = etree.SubElement(ha, Q + "bindings")
                self._bindings(bindings, engine, vr.now(), wanted, interfaces, request)
            if wanted.section("tunnels"):
                write_tunnels(etree.SubElement(ha, Q + "tunnels"), tunnels)
            if wanted.section("statistics"):
                write_statistics(etree.SubElement(ha, Q + "statistics"), engine, vr.discontinuity_time())
            if wanted.section("security-violations"):
                write_violations(etree.SubElement(ha, Q + "security-violations"), engine)
            transport = getattr(vr, "transport", None)
            if wanted.section("receive-path") and transport is not None:
                path = etree.SubElement(ha, Q + "receive-path")
                leaf(path, "path", "c" if transport.in_c else "python")
                leaf(path, "reason", transport.receive_path)
                leaf(path, "renewals-answered-in-c", transport.fast_hits)
        if wanted.section("mobile-node"):
            for name in engine.config.mobile_nodes:
                if wanted.nodes is None or name in wanted.nodes:
                    write_mobile_node(entry, engine, name)
        aaa = getattr(vr, "aaa", None)
        if wanted.section("aaa") and aaa is not None and engine.config.aaa is not None:
            write_aaa(etree.SubElement(entry, Q + "aaa"), engine, aaa)
        if wanted.section("address-pool"):
            for name in engine.config.address_pools:
                if wanted.pools is not None and name not in wanted.pools:
                    continue
                usage = engine.pool_usage(name)
                if usage is None:
                    continue
                pool = etree.SubElement(entry, Q + "address-pool")
                leaf(pool, "name", name)
                leaf(pool, "size", usage.size)
                leaf(pool, "in-use", usage.in_use)
                leaf(pool, "free", usage.free)

    def _bindings(
        self,
        parent: etree._Element,
        engine: HomeAgent,
        now: float,
        wanted: Wanted,
        interfaces: dict[IPv4Address, str | None],
        request: StateRequest,
    ) -> None:
        coas = {int(c) for c in wanted.care_of_addresses} if wanted.care_of_addresses is not None else None
        plan = raw_plan(request)
        leaves = (plan.leaves if plan is not None else None) or ALL_LEAVES
        as_json = plan is not None and request.json and leaves is ALL_LEAVES
        fmt = (BindingJsonWriter if as_json else BindingWriter)(engine, now, interfaces)
        batches = self._raw_pages(engine, wanted.home_addresses)

        def written() -> Iterator[bytes]:
            first = True
            for batch in batches:
                if coas is not None:
                    batch = [b for b in batch if b.care_of_address in coas]
                if batch:
                    self.last_bindings_built += len(batch)
                    if as_json and not first:
                        yield b","  # JSON pages are entries joined by commas: one between pages too
                    first = False
                    yield fmt.page(batch, leaves)

        if plan is None:  # the server filters these: it needs elements
            data = b"".join(written())
            if data:
                parent.extend(etree.fromstring(b"<bindings>%s</bindings>" % data))
            return
        # exact for this filter: handed over as raw pages, spliced by the server (or, to a RESTCONF
        # JSON read, sent as they are); a walk of the whole table is written while the reply goes
        # out (a page, then the page's bytes on the wire)
        key = f"bindings-{id(parent)}"
        pages = written() if wanted.home_addresses is None else list(written())
        request.raw[key] = RawJson((NS, "binding"), pages) if as_json else pages
        parent.text = raw_placeholder(key)

    @staticmethod
    def _raw_pages(engine: HomeAgent, homes: set[IPv4Address] | None) -> Iterable[list[Binding]]:
        """The engine's binding objects in key order, in pages: all, or those of the given home addresses."""
        if homes is None:
            yield from engine.raw_binding_pages(_PAGE)
            return
        for home in sorted(homes):
            first = (int(home) << 32) - 1 if int(home) else None
            # at most 8 simultaneous bindings per home address
            yield [b for b in engine.raw_bindings_after(first, 16) if b.home_address == int(home)]

"""The ``none`` backend: control plane only.  Nothing is forwarded; intents are only recorded.

For users who run mipha as a registration server in front of some other data plane, and for the engine's
tests, which assert against :attr:`NonePlane.record`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from ipaddress import IPv4Address

from .base import DataPlane, DataPlaneError, DesiredBinding, TunnelCounters, VirtualRouterPlane
from .intents import EnsureTunnel, Intent, ReleaseTunnel, RemoveHomeRoute, SetHomeRoute

log = logging.getLogger(__name__)


class NonePlane(DataPlane):
    """Keeps the state a real backend would program, and a log of every intent, in memory."""

    name = "none"

    def __init__(self, vr: VirtualRouterPlane) -> None:
        self.vr = vr
        self.record: list[Intent] = []
        self.refs: dict[IPv4Address, int] = {}
        self.homes: dict[IPv4Address, tuple[IPv4Address, ...]] = {}
        self.resyncs: list[list[DesiredBinding]] = []

    async def start(self) -> None:
        log.warning(
            "VR %s: data plane backend 'none': registrations are answered but NO packet is forwarded",
            self.vr.name,
        )

    async def stop(self, *, flush: bool = True) -> None:
        if flush:
            self.refs.clear()
            self.homes.clear()

    async def apply(self, intents: Iterable[Intent]) -> None:
        for intent in intents:
            self.record.append(intent)
            if isinstance(intent, EnsureTunnel):
                self.refs[intent.care_of_address] = self.refs.get(intent.care_of_address, 0) + 1
            elif isinstance(intent, ReleaseTunnel):
                left = self.refs.get(intent.care_of_address, 0) - 1
                if left < 0:
                    raise DataPlaneError(f"release of unknown tunnel to {intent.care_of_address}")
                if left:
                    self.refs[intent.care_of_address] = left
                else:
                    del self.refs[intent.care_of_address]
            elif isinstance(intent, SetHomeRoute):
                self.homes[intent.home_address] = intent.care_of_addresses
            elif isinstance(intent, RemoveHomeRoute):
                self.homes.pop(intent.home_address, None)

    async def resync(self, desired: Iterable[DesiredBinding]) -> None:
        wanted = list(desired)
        self.resyncs.append(wanted)
        self.homes = {b.home_address: b.care_of_addresses for b in wanted}
        self.refs = {}
        for b in wanted:
            for coa in b.care_of_addresses:
                self.refs[coa] = self.refs.get(coa, 0) + 1

    def tunnels(self) -> list[TunnelCounters]:
        return [TunnelCounters(coa, None, n) for coa, n in sorted(self.refs.items())]

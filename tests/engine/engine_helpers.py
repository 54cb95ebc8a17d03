"""Shared helpers of the engine tests: a recording data plane, a controllable clock, request builders."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ha.dataplane.base import DataPlane, DesiredBinding, TunnelCounters
from ha.dataplane.intents import (
    EnsureTunnel,
    GratuitousArp,
    Intent,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from ha.engine.config import (
    AddressPool,
    HomeAgentConfig,
    MobileNode,
    SecurityAssociation,
    VirtualRouterConfig,
)
from ha.engine.home_agent import HomeAgent, Outgoing
from ha.protocol import (
    ExtensionType,
    ForeignHomeAuth,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationReply,
    RegistrationRequest,
    RequestFlags,
    UdpTunnelRequest,
    ntp_timestamp,
    pull_registration_reply,
    push_registration_request,
)
from ha.protocol.constants import AuthAlgorithm, ReplayProtection

HA = IPv4Address("192.0.2.1")
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
FA_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
WALL_OFFSET = 1_790_000_000.0


class RecordingDataPlane(DataPlane):
    """A fake backend that records every intent and keeps the state a real backend would build.

    It enforces the interface's contract so that tests fail on engine bugs: a ``ReleaseTunnel``
    without a matching ``EnsureTunnel`` raises, and the per-CoA reference counts must balance.
    """

    name = "recording"

    def __init__(self) -> None:
        self.log: list[Intent] = []
        self.tunnels_refs: Counter[tuple[IPv4Address, str]] = Counter()
        self.routes: dict[IPv4Address, tuple[IPv4Address, ...]] = {}
        self.reverse: dict[IPv4Address, bool] = {}
        self.proxy_arp: set[IPv4Address] = set()
        self.garps: list[GratuitousArp] = []

    async def start(self) -> None:  # pragma: no cover - not used by the engine tests
        pass

    async def stop(self, *, flush: bool = True) -> None:  # pragma: no cover
        pass

    async def apply(self, intents: Iterable[Intent]) -> None:
        self.apply_now(intents)

    def apply_now(self, intents: Iterable[Intent]) -> None:
        for intent in intents:
            self.log.append(intent)
            match intent:
                case EnsureTunnel(coa, encapsulation):
                    self.tunnels_refs[(coa, str(encapsulation))] += 1
                case ReleaseTunnel(coa, encapsulation):
                    key = (coa, str(encapsulation))
                    if self.tunnels_refs[key] <= 0:
                        raise AssertionError(f"release of a tunnel never ensured: {intent}")
                    self.tunnels_refs[key] -= 1
                    if not self.tunnels_refs[key]:
                        del self.tunnels_refs[key]
                case SetHomeRoute(home, coas, reverse):
                    for coa in coas:
                        if not any(k[0] == coa for k in self.tunnels_refs):
                            raise AssertionError(f"route via {coa} without a tunnel: {intent}")
                    self.routes[home] = coas
                    self.reverse[home] = reverse
                case RemoveHomeRoute(home):
                    if home not in self.routes:
                        raise AssertionError(f"removing a route never set: {intent}")
                    del self.routes[home]
                case ProxyArp(home, enabled):
                    if enabled:
                        self.proxy_arp.add(home)
                    else:
                        self.proxy_arp.discard(home)
                case GratuitousArp():
                    self.garps.append(intent)
                case _:
                    raise AssertionError(f"unknown intent {intent!r}")

    async def resync(self, desired: Iterable[DesiredBinding]) -> None:  # pragma: no cover
        pass

    def tunnels(self) -> list[TunnelCounters]:
        refs: Counter[IPv4Address] = Counter()
        for (coa, _), count in self.tunnels_refs.items():
            refs[coa] += count
        return [TunnelCounters(coa, None, count) for coa, count in sorted(refs.items())]

    def drain(self, engine: HomeAgent) -> list[Intent]:
        """Apply everything the engine queued; return it."""
        intents = engine.drain_intents()
        self.apply_now(intents)
        return intents


@dataclass
class Clock:
    """Injected time: monotonic ``now`` and a wallclock a fixed offset away."""

    now: float = 1000.0
    _fraction: int = field(default=0)

    @property
    def wall(self) -> float:
        return self.now + WALL_OFFSET

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def timestamp(self) -> int:
        """A fresh NTP identification, strictly increasing even at the same instant."""
        self._fraction += 1
        return (ntp_timestamp(self.wall) & ~0xFFFF) | (self._fraction & 0xFFFF)


def sa(spi: int = 256, key: bytes = KEY, **kwargs: object) -> SecurityAssociation:
    return SecurityAssociation(spi, key, **kwargs)  # type: ignore[arg-type]


def node(name: str, home: str | None = None, **kwargs: object) -> MobileNode:
    kwargs.setdefault("security_associations", [sa()])
    return MobileNode(name, home_address=IPv4Address(home) if home else None, **kwargs)  # type: ignore[arg-type]


def vr_config(
    nodes: Iterable[MobileNode] = (),
    *,
    pools: Iterable[AddressPool] = (),
    foreign_agents: Iterable = (),
    **home_agent: object,
) -> VirtualRouterConfig:
    home_agent.setdefault("address", HA)
    return VirtualRouterConfig(
        "default",
        home_agent=HomeAgentConfig(**home_agent),  # type: ignore[arg-type]
        address_pools=list(pools),
        mobile_nodes=list(nodes),
        foreign_agents=list(foreign_agents),
    )


def build_request(
    *,
    home: str | IPv4Address,
    coa: str | IPv4Address,
    identification: int,
    lifetime: int = 600,
    flags: int = 0,
    ha: str | IPv4Address = HA,
    spi: int = 256,
    key: bytes = KEY,
    algorithm: AuthAlgorithm = AuthAlgorithm.HMAC_MD5,
    nai: str | None = None,
    fa: tuple[int, bytes] | None = None,
    sign: bool = True,
    udp_tunnel: UdpTunnelRequest | None = None,
) -> bytes:
    extensions: list = []
    if nai is not None:
        extensions.append(MobileNodeNai(nai))
    if udp_tunnel is not None:  # RFC 3519: before the MN-HA extension, which covers it
        extensions.append(udp_tunnel)
    extensions.append(MobileHomeAuth(spi))
    signers = {ExtensionType.MN_HA_AUTH: SecurityAssociation(spi, key, algorithm)} if sign else {}
    if not sign:
        extensions[-1] = MobileHomeAuth(spi, b"\0" * 16)
    if fa is not None:
        extensions.append(ForeignHomeAuth(fa[0]))
        signers[ExtensionType.FA_HA_AUTH] = SecurityAssociation(fa[0], fa[1])
    request = RegistrationRequest(
        RequestFlags(flags),
        lifetime,
        IPv4Address(home),
        IPv4Address(ha),
        IPv4Address(coa),
        identification,
        tuple(extensions),
    )
    return push_registration_request(request, sign=signers)


@dataclass
class Harness:
    """An engine, its clock and a recording data plane, with one-line registration calls."""

    engine: HomeAgent
    clock: Clock = field(default_factory=Clock)
    plane: RecordingDataPlane = field(default_factory=RecordingDataPlane)
    source_port: int = 40000

    def send(
        self, data: bytes, *, source: str = "198.51.100.7", received_on: IPv4Address = HA
    ) -> Outgoing | None:
        out = self.engine.handle_datagram(
            data,
            source=(source, self.source_port),
            received_on=received_on,
            now=self.clock.now,
            wallclock=self.clock.wall,
        )
        return out

    def register(
        self,
        home: str,
        coa: str,
        *,
        source: str | None = None,
        received_on: IPv4Address = HA,
        identification: int | None = None,
        **kwargs: object,
    ) -> RegistrationReply:
        ident = self.clock.timestamp() if identification is None else identification
        data = build_request(home=home, coa=coa, identification=ident, **kwargs)  # type: ignore[arg-type]
        out = self.send(data, source=source or coa, received_on=received_on)
        assert out is not None, "the engine discarded the request"
        return pull_registration_reply(out.data)

    def expire(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return self.engine.handle_timer(self.clock.now)

    def events(self) -> list:
        out = []
        while (event := self.engine.next_event()) is not None:
            out.append(event)
        return out


def harness(config: VirtualRouterConfig | None = None, **kwargs: object) -> Harness:
    nonces = iter(range(0x1000, 0x7FFFFFFF))
    engine = HomeAgent(config or vr_config([node("mn1", "10.1.0.1")]), nonce=lambda: next(nonces))
    return Harness(engine, **kwargs)  # type: ignore[arg-type]


NONCE = ReplayProtection.NONCE

"""The one small interface every data plane backend implements (``ipip``, ``tun``, ``none``).

The engine cannot tell backends apart: it only queues :mod:`ha.dataplane.intents`.  A backend is bound
to one virtual router (one network namespace, one HA address, one home interface).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from .intents import Encapsulation, Intent


@dataclass(frozen=True, slots=True)
class TunnelCounters:
    """Per-tunnel counters, read as operational state (``tunnels/tunnel``)."""

    care_of_address: IPv4Address
    interface: str | None
    binding_count: int
    in_packets: int = 0
    in_octets: int = 0
    out_packets: int = 0
    out_octets: int = 0


@dataclass(frozen=True, slots=True)
class DesiredBinding:
    """One home address and where its traffic goes; the unit of :meth:`DataPlane.resync`."""

    home_address: IPv4Address
    care_of_addresses: tuple[IPv4Address, ...]
    encapsulation: Encapsulation = Encapsulation.IP_IN_IP
    reverse_tunnel: bool = True
    udp_port: int = 0  # IP_IN_UDP: the NAT mapping's port (the care-of address is the NAT's address)


@dataclass(frozen=True, slots=True)
class VirtualRouterPlane:
    """What a backend needs to know about its virtual router."""

    name: str
    netns: str | None  # None = the daemon's own namespace (VR "default")
    ha_address: IPv4Address
    home_interface: str | None = None
    garp_count: int = 3
    garp_interval: float = 0.2
    extra: dict[str, str] = field(default_factory=dict)
    # "entry": one proxy-ARP neighbour entry per bound home address (exact; the kernel keeps them in a
    # 16-bucket hash, so insertion slows down past ~20k entries).  "interface": proxy_arp=1 on the home
    # interface; the kernel then answers for every address routed away from it, i.e. exactly the bound
    # home addresses plus any off-link destination a host on the home link might ARP for.
    proxy_arp_mode: str = "entry"
    #: Hot standby: start as a standby (see :meth:`DataPlane.set_standby`).
    standby: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can carry out, known to the decision before it replies (never code 0 for a
    binding the backend would then refuse).

    ``encapsulations``: the forward encapsulations it builds (RFC 2003 IP-in-IP, RFC 2784 GRE; no
    backend builds RFC 2004 minimal encapsulation).  ``simultaneous_bindings``: it sends a copy of each
    packet to every care-of address of a home address (RFC 5944 §4.2); without it S gets code 1.
    ``reverse_tunnel``: it checks and forwards reverse-tunnelled packets (RFC 3024); without it T is 137.
    ``udp_tunnels``: it carries RFC 3519 UDP tunnels (``Encapsulation.IP_IN_UDP``) through the
    registration socket given to :meth:`DataPlane.attach_udp_socket`, which passes it every type-4
    datagram (:meth:`DataPlane.udp_input`); without it a registration that needs one is 142.
    """

    encapsulations: frozenset[Encapsulation] = frozenset({Encapsulation.IP_IN_IP, Encapsulation.GRE})
    simultaneous_bindings: bool = True
    reverse_tunnel: bool = True
    udp_tunnels: bool = True


class DataPlaneError(Exception):
    """The kernel refused an operation; carries a message fit for a NETCONF rpc-error."""


class DataPlane(abc.ABC):
    """A data plane backend for one virtual router."""

    name: str = "abstract"
    #: What this backend can carry out (the engine's decisions take it into account).
    capabilities: Capabilities = Capabilities()

    def attach_udp_socket(self, sock: object) -> None:  # noqa: B027 - for backends with udp_tunnels
        """The UDP 434 socket of the virtual router: tunnel data leaves through it (RFC 3519)."""

    def udp_input(self, data: bytes, source: tuple[str, int]) -> None:  # noqa: B027 - optional
        """A tunnel data datagram (type 4) that arrived on the registration port."""

    async def set_standby(self, standby: bool) -> None:  # noqa: B027 - for backends on a home link
        """Hot standby.  A standby's backend holds tunnels and routes (kept warm from the group's
        bindings) but nothing that acts on the shared home link or on its own forwarding: no policy
        rule into its table, no proxy ARP, no gratuitous ARP.  Becoming active adds exactly those."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Create/adopt kernel state owned by mipha (namespace, tables, rules, devices)."""

    @abc.abstractmethod
    async def stop(self, *, flush: bool = True) -> None:
        """Stop; with ``flush`` remove every kernel object mipha created for this VR."""

    @abc.abstractmethod
    async def apply(self, intents: Iterable[Intent]) -> None:
        """Carry out intents in order (batched where the backend can); raise DataPlaneError."""

    @abc.abstractmethod
    async def resync(self, desired: Iterable[DesiredBinding]) -> None:
        """Make the kernel match exactly ``desired``: add what is missing, remove every stale object."""

    @abc.abstractmethod
    def tunnels(self) -> list[TunnelCounters]:
        """Current tunnels with their counters."""

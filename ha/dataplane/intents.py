"""Data plane intents: the only vocabulary the engine uses to ask for kernel state.

The engine (``ha.engine``) emits these imperative, idempotent requests; a backend in ``ha.dataplane``
(``ipip``, ``tun``, ``none``) carries them out inside the virtual router's network namespace.  They are
frozen dataclasses, like h11's events, so they can be queued, compared in tests and logged safely.

Tunnels are reference-counted by the backend: one tunnel per care-of address whatever the number of
mobile nodes behind it (JUNOSe, UMIP); ``EnsureTunnel`` / ``ReleaseTunnel`` come in pairs, one pair per
binding that uses the tunnel.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address


class Encapsulation(StrEnum):
    """Forward tunnel encapsulation (RFC 2003 / RFC 2784 GRE / RFC 2004 minimal)."""

    IP_IN_IP = "ip-in-ip"
    GRE = "gre"
    MINIMAL = "minimal"
    #: RFC 3519: IP-in-IP inside UDP/434 with the MIP tunnel data header, to a NAT mapping.  The
    #: tunnel's "care-of address" is the NAT's address; the port comes with ``SetHomeRoute``.
    IP_IN_UDP = "ip-in-udp"


@dataclass(frozen=True, slots=True)
class EnsureTunnel:
    """A binding needs a tunnel from the HA address to this care-of address (takes one reference)."""

    care_of_address: IPv4Address
    encapsulation: Encapsulation = Encapsulation.IP_IN_IP


@dataclass(frozen=True, slots=True)
class ReleaseTunnel:
    """A binding no longer needs the tunnel (drops one reference; the last one removes it)."""

    care_of_address: IPv4Address
    encapsulation: Encapsulation = Encapsulation.IP_IN_IP


@dataclass(frozen=True, slots=True)
class SetHomeRoute:
    """Intercept traffic for ``home_address`` and tunnel it to these care-of addresses (set or move).

    With simultaneous bindings (S bit) a home address has several care-of addresses and every one gets
    a copy (RFC 5944 §4.2).  ``reverse_tunnel`` allows decapsulated packets whose inner source is the
    home address when their outer source is one of the care-of addresses (RFC 3024).
    """

    home_address: IPv4Address
    care_of_addresses: tuple[IPv4Address, ...]
    reverse_tunnel: bool = True
    #: For an ``IP_IN_UDP`` tunnel: the NAT mapping's UDP port (its address is the care-of address).
    udp_port: int = 0


@dataclass(frozen=True, slots=True)
class RemoveHomeRoute:
    """Stop intercepting traffic for ``home_address`` (its last binding is gone)."""

    home_address: IPv4Address


@dataclass(frozen=True, slots=True)
class ProxyArp:
    """Answer ARP for ``home_address`` on the home interface with the HA's MAC (on) or stop (off)."""

    home_address: IPv4Address
    enabled: bool


@dataclass(frozen=True, slots=True)
class GratuitousArp:
    """Broadcast a burst of gratuitous ARPs for ``home_address`` on the home interface.

    ``for_mobile_node`` False: sender hardware address = the HA's MAC (first binding, RFC 5944 §4.6).
    True: the mobile node came home; announce its own MAC ``mn_mac`` when the engine knows it (else the
    backend only flushes the proxy entry).
    """

    home_address: IPv4Address
    for_mobile_node: bool = False
    mn_mac: str | None = None


Intent = EnsureTunnel | ReleaseTunnel | SetHomeRoute | RemoveHomeRoute | ProxyArp | GratuitousArp

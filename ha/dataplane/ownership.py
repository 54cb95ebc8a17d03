"""The marks that make every kernel object mipha creates recognisable (and nothing else touchable).

An operator reading ``ip route show table 434`` / ``ip rule`` / ``ip neigh show proxy`` / ``ip link`` sees:

- routes: ``table 434 proto 245`` (``RTPROT_MIPHA``); only routes with *both* marks are ever removed;
- the policy rule: ``pref 434 lookup 434 proto 245``;
- proxy-ARP entries: ``ip neigh show proxy`` with ``proto 245``;
- devices: ``mip-<CoA in hex>`` (ipip), ``mig-<CoA in hex>`` (gre), ``mip-tun`` (the TUN of the tun backend).

Reconciliation after a restart or a ``kill -9`` dumps exactly these and diffs them with the desired state.
"""

from __future__ import annotations

from ipaddress import IPv4Address

MIPHA_TABLE = 434
MIPHA_RULE_PRIORITY = 434
RTPROT_MIPHA = 245
TUN_IFNAME = "mip-tun"
IPIP_PREFIX = "mip-"
GRE_PREFIX = "mig-"


def tunnel_ifname(coa: IPv4Address, prefix: str = IPIP_PREFIX) -> str:
    """``mip-c0000201`` for CoA 192.0.2.1: 12 characters, readable back with :func:`coa_from_ifname`."""
    return f"{prefix}{int(coa):08x}"


def coa_from_ifname(ifname: str) -> IPv4Address | None:
    """The CoA encoded in a mipha tunnel name, or None when the name is not one of ours."""
    for prefix in (IPIP_PREFIX, GRE_PREFIX):
        if ifname.startswith(prefix) and len(ifname) == len(prefix) + 8:
            try:
                return IPv4Address(int(ifname[len(prefix) :], 16))
            except ValueError:
                return None
    return None

"""mipha/yang_config.py: what 100k mobile nodes repeat is held once, and every value still converts.

Nodes naming the same address pool share one string, nodes with the same care-of-access list share
one tuple of networks; a different list gets its own, and the values are those configured.
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address, IPv4Network

from lxml import etree

from mipha.yang_config import virtual_router

NS = "urn:mipha:yang:mipha-home-agent"
KEY = ":".join(["0f"] * 16)


def node(name: str, *, pool: str | None = None, home: str | None = None, coas: tuple[str, ...] = ()) -> str:
    where = f"<address-pool>{pool}</address-pool><nai>{name}@example.net</nai>" if pool else ""
    where += f"<home-address>{home}</home-address>" if home else ""
    access = "".join(f"<care-of-access>{c}</care-of-access>" for c in coas)
    return (
        f"<mobile-node><name>{name}</name>{where}{access}"
        f"<security-association><spi>256</spi><key>{KEY}</key></security-association></mobile-node>"
    )


def convert(*nodes: str):  # type: ignore[no-untyped-def]
    pool = "<address-pool><name>dial-in</name><range><start>10.1.0.1</start><end>10.1.0.9</end></range></address-pool>"
    xml = (
        f"<virtual-router xmlns='{NS}'><name>vr</name><home-agent><address>192.0.2.1</address></home-agent>"
        f"{pool}{''.join(nodes)}</virtual-router>"
    )
    config, _mode = virtual_router(etree.fromstring(xml))
    return config.mobile_nodes


def test_repeated_pool_names_and_care_of_access_lists_are_shared() -> None:
    office = ("198.51.100.0/24", "203.0.113.0/25")
    nodes = convert(
        node("a", pool="dial-in", coas=office),
        node("b", pool="dial-in", coas=office),
        node("c", home="10.2.0.3", coas=("198.51.100.0/24",)),
        node("d", home="10.2.0.4"),
    )
    a, b, c, d = (nodes[n] for n in "abcd")
    assert a.address_pool == "dial-in" and a.address_pool is b.address_pool
    assert a.address_pool is sys.intern("dial-in")
    assert a.care_of_access == (IPv4Network("198.51.100.0/24"), IPv4Network("203.0.113.0/25"))
    assert a.care_of_access is b.care_of_access
    assert c.care_of_access == (IPv4Network("198.51.100.0/24"),) and c.care_of_access is not a.care_of_access
    assert d.care_of_access == () and d.home_address == IPv4Address("10.2.0.4")
    assert [n.nai for n in (a, b)] == ["a@example.net", "b@example.net"]

"""The direct RFC 7951 JSON conversion of plain request bodies (server/restconf/json_body.py) against
libyang's (codec.json_to_xml), on the server's real schema: the same <config> byte for byte for every
plain body, and no answer (libyang's path then speaks) for every body it must not decide itself.
End to end, over curl, tests/restconf/test_restconf.py runs bodies both ways."""

from __future__ import annotations

import pytest
from lxml import etree

from server.app import build_core
from server.config import ServerConfig
from server.restconf import codec, handlers, json_body
from server.restconf.errors import HttpError
from server.restconf.uri import parse_api_path

M = "mipha-home-agent"
VRS = f"{M}:virtual-routers"
VR = f"{VRS}/virtual-router=default"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    core = build_core(ServerConfig(state_dir=tmp_path_factory.mktemp("state"), port=0))
    yield core.schema
    core.close()


def mn(**extra) -> dict:
    return {"name": "mn1", "home-address": "10.0.0.1", **extra}


#: (resource the body goes under, body): each must take the direct path
PLAIN = [
    (VRS, {f"{M}:virtual-router": [{"name": "default", "mobile-node": [mn()]}]}),
    (VR, {f"{M}:mobile-node": [mn(**{"security-association": [{"spi": 300, "key": KEY}]})]}),
    # members out of schema order, keys last: written in schema order, keys first
    (
        VR,
        {
            f"{M}:mobile-node": [
                {"security-association": [{"key": KEY, "spi": 257}], "home-address": "10.0.0.2", "name": "b"}
            ]
        },
    ),
    (VR, {f"{M}:mobile-node": [mn(), {"name": "mn2", "home-address": "10.0.0.2"}]}),
    (
        VR,
        {f"{M}:home-agent": {"address": "192.0.2.1", "udp-port": 4434, "encapsulation": ["ip-in-ip", "gre"]}},
    ),
    (VR, {f"{M}:home-agent": {"proxy-arp": "per-address", "address": "192.0.2.1"}}),
    (
        f"{VR}/mobile-node=mn1",
        {f"{M}:security-association": [{"spi": 400, "algorithm": "hmac-md5", "key": KEY}]},
    ),
    (f"{VR}/mobile-node=mn1", {f"{M}:nai": "mn1@example.net"}),
    (VR, {f"{M}:mobile-node": [mn(name="a&b<c>")]}),  # a character the parser would take as markup
    (VR, {f"{M}:mobile-node": [mn(name="a\tb\nc]]>'\"")]}),  # whitespace and quotes, kept
]

#: bodies the direct path must leave to libyang: wrong, or not plain
OTHER = [
    (VR, {f"{M}:mobile-node": [mn(bogus=1)]}),  # unknown member
    (VR, {f"{M}:mobile-node": [mn(**{"assigned-address": "10.0.0.9"})]}),  # state data
    (
        VR,
        {f"{M}:mobile-node": [mn(**{"security-association": [{"spi": "300", "key": KEY}]})]},
    ),  # uint32 as a string
    (VR, {f"{M}:mobile-node": [mn(**{"home-address": 167772161})]}),  # an address as a number
    (VR, {f"{M}:home-agent": {"udp-port": True}}),  # a boolean for a number
    (VR, {f"{M}:mobile-node": [mn(**{"home-address": "300.1.1.1"})]}),  # the type refuses it
    (VR, {f"{M}:home-agent": {"udp-port": 70000}}),  # out of range
    (VR, {f"{M}:mobile-node": [mn(**{"security-association": [{"spi": 7, "key": KEY}]})]}),  # reserved SPI
    (VR, {f"{M}:mobile-node": [mn(name="x" * 65)]}),  # too long for the type
    (VR, {f"{M}:mobile-node": [{"home-address": "10.0.0.1"}]}),  # no key
    (VR, {f"{M}:mobile-node": [mn(), mn()]}),  # twice in one body
    (VR, {f"{M}:mobile-node": [mn(**{"@name": {"ietf-origin:origin": "x"}})]}),  # metadata
    (VR, {"mobile-node": [mn()]}),  # a top-level member without its module
    (VR, {f"{M}:mobile-node": [{f"{M}:name": "mn1", "home-address": "10.0.0.1"}]}),  # qualified, same module
    (VR, {f"{M}:mobile-node": [mn(**{"address-pool": "p"})]}),  # leafref
    (
        VR,
        {f"{M}:mobile-node": [mn(**{"care-of-access": ["10.0.0.0/8"]})]},
    ),  # a type with its own canonical form
    (VR, {f"{M}:mobile-node": mn()}),  # a list entry not in an array
    (VR, {f"{M}:home-agent": {"encapsulation": ["gre", "gre"]}}),  # a leaf-list value twice
    (f"{VRS}/virtual-router=-bad", {f"{M}:router-id": "192.0.2.1"}),  # the URI's key is not a name
    (VR, {f"{M}:mobile-node": [mn(name="a\x01")]}),  # a character XML cannot hold
    (f"{VR}/mobile-node=mn1", {f"{M}:name": "mn1"}),  # the key of the entry the URI names
    (VR, {f"{M}:mobile-node": [mn(name="a\rb")]}),  # a CR, which libyang's XML round trip makes a LF
    (VR, {f"{M}:mobile-node": [mn(name="a\ud800")]}),  # a lone surrogate ("\ud800" is valid JSON)
]


def _config(schema, parent, nodes) -> bytes:
    return etree.tostring(handlers.config_for(schema, parent, nodes, "merge"))


@pytest.mark.parametrize("where,body", PLAIN)
def test_plain_bodies_give_what_libyang_gives(schema, where, body):
    parent = parse_api_path(schema, where)
    fast = json_body.convert(schema, parent, body)
    assert fast is not None, "a plain body must take the direct path"
    slow = codec.json_to_xml(schema.ctx, parent, body)
    assert _config(schema, parent, fast) == _config(schema, parent, slow)


@pytest.mark.parametrize("where,body", OTHER)
def test_other_bodies_are_left_to_libyang(schema, where, body):
    parent = parse_api_path(schema, where)
    assert json_body.convert(schema, parent, body) is None
    try:  # libyang decides (some pass its parse and are refused later, by validation)
        codec.json_to_xml(schema.ctx, parent, body)
    except HttpError as err:
        assert err.status == 400

"""The validation layer: the valid example passes; every violation class is reported precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from server.validation import ValidationFailed, Validator
from server.xmlsafe import UnsafeXmlError, parse_xml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NS = {"mipha": "urn:mipha:yang:mipha-home-agent"}
VR = "/mipha:virtual-routers/mipha:virtual-router[mipha:name='home']"
MN1 = f"{VR}/mipha:mobile-node[mipha:name='mn1']"
MN2 = f"{VR}/mipha:mobile-node[mipha:name='mn2']"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"

# file → (error-tag, error-app-tag, error-path, bad-element)
EXPECTED: dict[str, tuple[str, str | None, str, str | None]] = {
    "leafref-missing-pool": ("data-missing", "instance-required", f"{MN1}/mipha:address-pool", None),
    "both-home-address-and-pool": ("operation-failed", "home-address-assignment", MN1, None),
    "neither-home-address-nor-pool": ("operation-failed", "home-address-assignment", MN1, None),
    "pool-without-nai": ("operation-failed", "nai-required", MN1, None),
    "spi-reserved": ("invalid-value", "spi-reserved", f"{MN1}/mipha:security-association/mipha:spi", "spi"),
    "key-too-short": (
        "invalid-value",
        "key-length",
        f"{MN1}/mipha:security-association[mipha:spi='256']/mipha:key",
        "key",
    ),
    "key-not-hex": (
        "invalid-value",
        "key-length",
        f"{MN1}/mipha:security-association[mipha:spi='256']/mipha:key",
        "key",
    ),
    "missing-key": (
        "data-missing",
        None,
        f"{MN1}/mipha:security-association[mipha:spi='256']/mipha:key",
        None,
    ),
    "overlapping-ranges": (
        "operation-failed",
        "range-overlap",
        f"{VR}/mipha:address-pool[mipha:name='roaming']/mipha:range[mipha:start='192.0.2.100']",
        None,
    ),
    "reversed-range": (
        "operation-failed",
        "range-reversed",
        f"{VR}/mipha:address-pool[mipha:name='roaming']/mipha:range[mipha:start='192.0.2.200']",
        None,
    ),
    "duplicate-nai": ("operation-failed", "data-not-unique", MN2, None),
    "duplicate-home-address": ("operation-failed", "data-not-unique", MN2, None),
    "duplicate-list-key": ("data-exists", None, MN1, None),
    "bad-ipv4": ("invalid-value", None, f"{MN1}/mipha:home-address", "home-address"),
    "lifetime-out-of-range": (
        "invalid-value",
        None,
        f"{VR}/mipha:home-agent/mipha:max-lifetime",
        "max-lifetime",
    ),
    "ip-in-ip-disabled": ("operation-failed", "ip-in-ip-required", f"{VR}/mipha:home-agent", None),
    "home-agent-without-address": (
        "operation-failed",
        "home-agent-address-missing",
        f"{VR}/mipha:home-agent",
        None,
    ),
    "unknown-element": ("unknown-element", None, MN1, "colour"),
    "unknown-enum": (
        "invalid-value",
        None,
        f"{MN1}/mipha:security-association[mipha:spi='256']/mipha:algorithm",
        "algorithm",
    ),
}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


def test_valid_example_validates(validator: Validator) -> None:
    assert validator.validate((EXAMPLES / "startup.xml").read_bytes()) == []


def test_parse_returns_tree_with_defaults(validator: Validator) -> None:
    tree = validator.parse((EXAMPLES / "startup.xml").read_bytes())
    assert tree is not None
    try:
        node = tree.find_path(
            "/mipha-home-agent:virtual-routers/virtual-router[name='home']/home-agent/udp-port"
        )
        assert node is not None and node.value() == 434  # a default, filled in by validation
    finally:
        tree.free()


def test_every_invalid_example_is_covered() -> None:
    files = {p.stem for p in (EXAMPLES / "invalid").glob("*.xml")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_example_rejected_precisely(validator: Validator, name: str) -> None:
    tag, app_tag, path, bad_element = EXPECTED[name]
    errors = validator.validate((EXAMPLES / "invalid" / f"{name}.xml").read_bytes())
    assert len(errors) == 1, errors  # one violation per file, no cascade from the repair
    (err,) = errors
    assert (err.tag, err.app_tag, err.path, err.bad_element) == (tag, app_tag, path, bad_element)
    assert err.type == "application"
    assert err.nsmap == {"mipha": NS["mipha"]}
    assert err.message and "\n" not in err.message


def test_unique_error_names_both_entries(validator: Validator) -> None:
    (err,) = validator.validate((EXAMPLES / "invalid" / "duplicate-nai.xml").read_bytes())
    assert err.info == (("non-unique", MN1), ("non-unique", MN2))


def test_all_violations_of_one_document_are_reported(validator: Validator) -> None:
    doc = f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="urn:mipha:yang:mipha-home-agent"><virtual-router><name>home</name>
  <router-id>192.0.2.1</router-id><home-agent><max-lifetime>3</max-lifetime></home-agent>
  <address-pool><name>p</name><range><start>10.0.0.9</start><end>10.0.0.1</end></range></address-pool>
  <mobile-node><name>mn1</name><home-address>10.1.1.300</home-address>
    <security-association><spi>256</spi><key>{KEY}</key></security-association></mobile-node>
  <mobile-node><name>mn2</name><address-pool>p</address-pool></mobile-node>
  <mobile-node><name>mn3</name><home-address>10.1.1.3</home-address><shoe-size>9</shoe-size>
    <security-association><spi>300</spi></security-association></mobile-node>
  <mobile-node><name>mn4</name><nai>x@y</nai><address-pool>nope</address-pool></mobile-node>
</virtual-router></virtual-routers></config>"""
    errors = validator.validate(doc)
    got = sorted((e.tag, e.app_tag or "", e.path) for e in errors)
    mn = f"{VR}/mipha:mobile-node"
    assert got == sorted(
        [
            ("invalid-value", "", f"{VR}/mipha:home-agent/mipha:max-lifetime"),
            ("invalid-value", "", f"{mn}[mipha:name='mn1']/mipha:home-address"),
            ("unknown-element", "", f"{mn}[mipha:name='mn3']"),
            (
                "operation-failed",
                "range-reversed",
                f"{VR}/mipha:address-pool[mipha:name='p']/mipha:range[mipha:start='10.0.0.9']",
            ),
            ("operation-failed", "nai-required", f"{mn}[mipha:name='mn2']"),
            (
                "data-missing",
                "",
                f"{mn}[mipha:name='mn3']/mipha:security-association[mipha:spi='300']/mipha:key",
            ),
            ("data-missing", "instance-required", f"{mn}[mipha:name='mn4']/mipha:address-pool"),
        ]
    )


def test_error_path_uses_the_documents_own_prefix(validator: Validator) -> None:
    doc = """<m:virtual-routers xmlns:m="urn:mipha:yang:mipha-home-agent"><m:virtual-router>
      <m:name>v1</m:name><m:home-agent><m:udp-port>0</m:udp-port></m:home-agent>
      </m:virtual-router></m:virtual-routers>"""
    (err,) = validator.validate(doc)
    assert err.path == "/m:virtual-routers/m:virtual-router[m:name='v1']/m:home-agent/m:udp-port"
    assert err.nsmap == {"m": NS["mipha"]}


def test_unknown_namespace_is_reported(validator: Validator) -> None:
    doc = """<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
      <gadgets xmlns="urn:example:gadgets"><gadget/></gadgets></config>"""
    (err,) = validator.validate(doc)
    assert err.tag == "unknown-namespace"
    assert ("bad-namespace", "urn:example:gadgets") in err.info


def test_protected_values_never_appear_in_messages(validator: Validator) -> None:
    secret = ":".join(["zz"] * 20)  # long enough for the length check, fails the hex pattern
    doc = f"""<virtual-routers xmlns="urn:mipha:yang:mipha-home-agent"><virtual-router><name>v</name>
      <mobile-node><name>m</name><home-address>192.0.2.9</home-address>
      <security-association><spi>256</spi><key>{secret}</key></security-association>
      </mobile-node></virtual-router></virtual-routers>"""
    (err,) = validator.validate(doc)
    assert err.tag == "invalid-value"
    assert "zz" not in err.message and "value not shown" in err.message


def test_parse_raises_with_all_errors(validator: Validator) -> None:
    with pytest.raises(ValidationFailed) as info:
        validator.parse((EXAMPLES / "invalid" / "bad-ipv4.xml").read_bytes())
    assert [e.tag for e in info.value.errors] == ["invalid-value"]


def test_empty_document_is_valid(validator: Validator) -> None:
    assert validator.validate(b'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>') == []
    assert validator.parse(b'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>') is None


def test_validation_does_not_modify_the_callers_tree(validator: Validator) -> None:
    root = etree.fromstring((EXAMPLES / "invalid" / "unknown-element.xml").read_bytes())
    before = etree.tostring(root)
    assert validator.validate(root)
    assert etree.tostring(root) == before


@pytest.mark.parametrize(
    "payload",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
        b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>',
        b"<r><unclosed></r>",
        b"<r>" * 300 + b"</r>" * 300,
    ],
)
def test_hostile_xml_is_refused(payload: bytes) -> None:
    with pytest.raises(UnsafeXmlError):
        parse_xml(payload)

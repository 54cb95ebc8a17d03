"""Engine events become YANG notifications that validate against the module; denials are rate-limited."""

from __future__ import annotations

from ipaddress import IPv4Address

import libyang
from lxml import etree

from ha.engine.events import BindingCreated, BindingRemoved, RegistrationDenied, RemovalReason
from mipha.notify import Notifier, TokenBucket, notification
from server.yang import shared_context

NS = "urn:mipha:yang:mipha-home-agent"
HOME, COA = IPv4Address("192.0.2.10"), IPv4Address("198.51.100.7")


def valid(body: etree._Element) -> bool:
    """The notification parses as a YANG notification of mipha-home-agent (libyang)."""
    ctx = shared_context()
    wrapped = (
        '<notification xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0">'
        "<eventTime>2026-11-27T00:00:00Z</eventTime>" + etree.tostring(body).decode() + "</notification>"
    )
    node = ctx.parse_op_mem("xml", wrapped, dtype=libyang.DataType.NOTIF_NETCONF)
    node.free()
    return True


def test_bodies_carry_the_event_fields_and_escape_names() -> None:
    created = notification("vr<1>", BindingCreated(HOME, COA, "a&b", "x@y", 600))
    assert created.tag == f"{{{NS}}}binding-created"
    assert created.findtext(f"{{{NS}}}virtual-router") == "vr<1>"
    assert created.findtext(f"{{{NS}}}mobile-node") == "a&b"
    assert created.findtext(f"{{{NS}}}nai") == "x@y" and created.findtext(f"{{{NS}}}lifetime") == "600"
    removed = notification("vr", BindingRemoved(HOME, COA, "mn", RemovalReason.EXPIRED))
    assert removed.findtext(f"{{{NS}}}reason") == "expired"
    denied = notification("vr", RegistrationDenied(131, COA, 256, HOME))
    assert [etree.QName(c).localname for c in denied] == [
        "virtual-router",
        "code",
        "peer",
        "spi",
        "home-address",
    ]


def test_bodies_validate_against_the_module() -> None:
    for event in (
        BindingCreated(HOME, COA, "mn", None, 600),
        BindingRemoved(HOME, COA, "mn", RemovalReason.CLEARED),
        RegistrationDenied(133, COA, 300, None),
    ):
        assert valid(notification("vr", event))


def built(made: list) -> list[etree._Element]:
    """The notifier publishes builders (run only when someone needs the notification): run them."""
    return [make() for make in made]


def test_denials_are_rate_limited_but_bindings_are_not() -> None:
    clock = [0.0]
    made: list = []
    n = Notifier(made.append, denied_rate=10, denied_burst=5, clock=lambda: clock[0])
    n.events(
        "vr", [RegistrationDenied(131, COA, 256)] * 50 + [BindingCreated(HOME, COA, "mn", None, 60)] * 20
    )
    assert sum(1 for b in built(made) if b.tag.endswith("registration-denied")) == 5
    assert sum(1 for b in built(made) if b.tag.endswith("binding-created")) == 20
    assert n.suppressed == 45
    clock[0] = 1.0  # a second later: 10 more tokens, capped at the burst of 5
    n.events("vr", [RegistrationDenied(131, COA, 256)] * 50)
    assert sum(1 for b in built(made) if b.tag.endswith("registration-denied")) == 10


def test_token_bucket_refills_up_to_its_burst() -> None:
    t = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: t[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    t[0] = 100.0
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]

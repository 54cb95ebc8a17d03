"""The glue through a real NETCONF server and client: keyed changes reach the engines; a failure injected at
each step of a transaction leaves running, every engine and every runtime exactly as they were.

One edit touches three virtual routers at once: in ``a`` mobile nodes are added, removed and modified
(a keyed change for its engine), ``b`` gets a new UDP port (its runtime is rebuilt with its bindings)
and ``c`` is new (its runtime starts, in a namespace of its own).  A failure is injected in turn into
validation (a duplicate NAI libyang refuses), ``a``'s engine prepare, the start of ``b``'s new
runtime, the start of ``c``, and a second subscriber refusing after ours prepared (ours is aborted).
Data plane ``none``; the namespaces are created by the runtimes and removed at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_helpers import build_request
from nc_server import ServerThread, connect

from ha.engine.config import VirtualRouterConfig
from ha.engine.errors import ConfigRefused
from ha.netns import netns_exists
from ha.protocol import ntp_timestamp
from mipha.glue import HomeAgentSubscriber
from mipha.runtime import VirtualRouter, VirtualRouterError
from server.auth import User, hash_password
from server.config import ServerConfig
from server.errors import RpcError

NS = "urn:mipha:yang:mipha-home-agent"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = ":".join(KEY_HEX[i : i + 2] for i in range(0, 32, 2))
TAG = uuid.uuid4().hex[:6]
NETNS = {vr: f"mipha-t{TAG}-{vr}" for vr in "abc"}
HA = {"a": "10.77.0.1", "b": "10.77.1.1", "c": "10.77.2.1"}
PASSWORD = "glue-secret"

pytestmark = pytest.mark.skipif(
    subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0",
    reason="creates network namespaces (root)",
)


def mobile_node(name: str, home: str, nai: str) -> str:
    return (
        f"<mobile-node><name>{name}</name><home-address>{home}</home-address><nai>{nai}</nai>"
        f"<security-association><spi>256</spi><key>{KEY}</key></security-association></mobile-node>"
    )


def router(vr: str, port: int, nodes: str) -> str:
    return (
        f"<virtual-router><name>{vr}</name><netns>{NETNS[vr]}</netns><home-agent><address>{HA[vr]}</address>"
        f"<udp-port>{port}</udp-port></home-agent>{nodes}</virtual-router>"
    )


def config(*routers: str) -> str:
    return f'<config xmlns="{NC}"><virtual-routers xmlns="{NS}">{"".join(routers)}</virtual-routers></config>'


INITIAL = config(
    router("a", 10434, mobile_node("mn1", "10.8.0.1", "mn1@a") + mobile_node("mn2", "10.8.0.2", "mn2@a")),
    router("b", 10435, mobile_node("mn1", "10.9.0.1", "mn1@b")),
)
# one edit, three virtual routers: a (entries), b (new port: rebuilt), c (new)
CHANGE = config(
    f'<virtual-router><name>a</name><mobile-node xmlns:nc="{NC}" nc:operation="delete"><name>mn1</name>'
    "</mobile-node><mobile-node><name>mn2</name><nai>renamed@a</nai></mobile-node>"
    + mobile_node("mn3", "10.8.0.3", "mn3@a") + "</virtual-router>",
    "<virtual-router><name>b</name><home-agent><udp-port>10436</udp-port></home-agent></virtual-router>",
    router("c", 10437, mobile_node("mn1", "10.10.0.1", "mn1@c")),
)  # fmt: skip


class Faults:
    """The daemon's router factory, with failures injected on request."""

    def __init__(self) -> None:
        self.start_fails: set[tuple[str, int]] = set()  # (virtual router, UDP port) whose start fails
        self.prepare_fails: set[str] = set()  # virtual routers whose engine refuses the change

    def new_router(self, config: VirtualRouterConfig, mode: str) -> VirtualRouter:
        faults = self

        class Injected(VirtualRouter):
            async def _start(self, restored) -> None:
                assert config.home_agent is not None
                if (config.name, config.home_agent.udp_port) in faults.start_fails:
                    raise VirtualRouterError(
                        "injected start failure",
                        f"/mipha:virtual-routers/virtual-router[name='{config.name}']",
                    )
                await super()._start(restored)
                engine = self.engine
                assert engine is not None
                for method in ("prepare", "prepare_change"):
                    real = getattr(engine, method)

                    def checked(arg, real=real):
                        if config.name in faults.prepare_fails:
                            raise ConfigRefused("injected refusal", path="/mipha:virtual-routers")
                        return real(arg)

                    setattr(engine, method, checked)

        return Injected(config, backend="none", journal=None, proxy_arp_mode=mode)  # fmt: skip


class Refuser:
    """A second subscriber: refuses in prepare when armed (after ours prepared)."""

    armed = False

    def validate(self, txn) -> None: ...
    def abort(self, txn) -> None: ...
    def apply(self, txn) -> None: ...

    def prepare(self, txn) -> None:
        if self.armed:
            raise RpcError(
                "operation-failed", "injected refusal of the second subscriber", type="application"
            )


def snapshot(routers: dict[str, VirtualRouter]) -> dict:
    """What must not move when a transaction is refused: per router, its runtime's settings, its
    engine's configuration and look-ups, its bindings."""
    out = {}
    for name, vr in sorted(routers.items()):
        engine = vr.engine
        assert engine is not None
        out[name] = (
            vr.config.home_agent.udp_port if vr.config.home_agent else None,
            dict(engine.config.mobile_nodes),
            dict(engine._by_home),
            dict(engine._by_nai),
            [
                (b.home_address, b.care_of_address, b.mobile_node)
                for p in engine.raw_binding_pages()
                for b in p
            ],
        )
    return out


def register(srv: ServerThread, routers: dict[str, VirtualRouter], vr: str, home: str, coa: str) -> int:
    def send() -> int:
        engine = routers[vr].engine
        assert engine is not None
        wall = time.time()
        ident = ntp_timestamp(wall)
        data = build_request(home=home, coa=coa, identification=ident, ha=HA[vr], key=bytes.fromhex(KEY_HEX))
        out = engine.handle_datagram(
            data, source=(coa, 434), received_on=IPv4Address(HA[vr]), now=srv.loop.time(), wallclock=wall
        )
        assert out is not None
        return out.data[1]  # the reply code

    return srv.call(send)


@pytest.fixture
def served(tmp_path: Path):
    routers: dict[str, VirtualRouter] = {}
    faults, refuser = Faults(), Refuser()
    sub = HomeAgentSubscriber(routers, faults.new_router)
    users = [User("admin", hash_password(PASSWORD, n_log2=10), (), frozenset({"admin"}))]
    srv = ServerThread(
        ServerConfig(state_dir=tmp_path, port=0, users=users, auth_fail_delay=0.05),
        subscribers=[sub, refuser],
    )
    try:
        yield srv, routers, faults, refuser
    finally:
        for vr in list(routers.values()):
            srv.run(vr.stop(flush=True, release=True))
        srv.stop()
        for name in NETNS.values():
            if netns_exists(name):
                subprocess.run(["ip", "netns", "del", name], check=False)


def test_keyed_changes_reach_the_engines_and_refusals_change_nothing(served) -> None:
    srv, routers, faults, refuser = served
    with connect(srv, ("admin", PASSWORD)) as m:
        m.edit_config(target="running", config=INITIAL)
        assert register(srv, routers, "a", "10.8.0.1", "198.51.100.1") == 0
        assert register(srv, routers, "a", "10.8.0.2", "198.51.100.2") == 0
        assert register(srv, routers, "b", "10.9.0.1", "198.51.100.3") == 0
        running = m.get_config(source="running").data_xml
        before = srv.call(lambda: snapshot(routers))
        engine_a = routers["a"].engine

        duplicate_nai = config(
            f"<virtual-router><name>a</name>{mobile_node('mn4', '10.8.0.4', 'mn2@a')}</virtual-router>"
        )
        injections = [
            ("validate", lambda: None, duplicate_nai),
            ("a's engine prepare", lambda: faults.prepare_fails.add("a"), CHANGE),
            ("b's new runtime", lambda: faults.start_fails.add(("b", 10436)), CHANGE),
            ("c's start", lambda: faults.start_fails.add(("c", 10437)), CHANGE),
            ("another subscriber", lambda: setattr(refuser, "armed", True), CHANGE),
        ]  # fmt: skip
        for step, inject, edit in injections:
            inject()
            with pytest.raises(RPCError):
                m.edit_config(target="running", config=edit)
            faults.prepare_fails.clear()
            faults.start_fails.clear()
            refuser.armed = False
            assert m.get_config(source="running").data_xml == running, step
            assert srv.call(lambda: snapshot(routers)) == before, step
            assert routers["a"].engine is engine_a, step  # a's engine was never replaced
            assert sorted(routers) == ["a", "b"] and not netns_exists(NETNS["c"]), step

        m.edit_config(target="running", config=CHANGE)
        after = srv.call(lambda: snapshot(routers))
        # added, rebuilt or changed: each runtime keeps its engine's node map, not a second one
        assert all(vr.config.mobile_nodes is vr.engine.config.mobile_nodes for vr in routers.values())
    nodes_a = after["a"][1]
    assert sorted(nodes_a) == ["mn2", "mn3"] and nodes_a["mn2"].nai == "renamed@a"
    assert nodes_a["mn2"] is before["a"][1]["mn2"] or nodes_a["mn2"].nai != before["a"][1]["mn2"].nai
    assert after["a"][4] == [(int(IPv4Address("10.8.0.2")), int(IPv4Address("198.51.100.2")), "mn2")]
    assert after["b"][0] == 10436 and after["b"][4] == before["b"][4]  # rebuilt with its binding
    assert sorted(routers) == ["a", "b", "c"]
    assert register(srv, routers, "a", "10.8.0.3", "198.51.100.4") == 0  # the added node registers
    assert register(srv, routers, "a", "10.8.0.1", "198.51.100.5") != 0  # the removed one no more


def test_a_settings_change_reaches_the_engine_without_a_rebuild(served) -> None:
    srv, routers, _, _ = served
    with connect(srv, ("admin", PASSWORD)) as m:
        m.edit_config(target="running", config=INITIAL)
        assert register(srv, routers, "a", "10.8.0.1", "198.51.100.1") == 0
        engine = routers["a"].engine
        m.edit_config(
            target="running",
            config=config("<virtual-router><name>a</name><home-agent><max-lifetime>60</max-lifetime></home-agent></virtual-router>"),
        )  # fmt: skip
        assert routers["a"].engine is engine and engine._policy.max_lifetime == 60
        assert engine.binding_count == 1
        root = etree.fromstring(m.get_config(source="running").data_xml.encode())
        assert root.findtext(f".//{{{NS}}}max-lifetime") == "60"

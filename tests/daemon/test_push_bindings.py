"""YANG-Push on-change of the binding table and statistics against a real `mipha run`: real UDP
registrations (`mipha mn` inside the virtual router's namespace, data plane `none`), a raw NETCONF
client over SSH.

- register / renew / deregister / expiry each arrive as one YANG Patch edit (create, replace, delete);
- a user whom NACM denies the bindings gets none of them, but its statistics;
- a burst of registrations within a dampening period arrives as one update;
- a session that closes takes its subscriptions with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "server"))

from daemon_harness import NS, SA, Daemon, mn_command  # noqa: E402
from free_ports import free_port  # noqa: E402
from nc_rawclient import RawClient  # noqa: E402

from server.auth import hash_password  # noqa: E402
from server.xmlns import NC_NS  # noqa: E402

SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
Q = {"yp": YP, "sn": SN, "m": NS}
VR = "push"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
PREFIX = f"/mipha-home-agent:virtual-routers/virtual-router={VR}/home-agent/bindings/binding="


def nodes(count: int) -> str:
    return "".join(
        f"<mobile-node><name>mn{i}</name><home-address>10.9.0.{i}</home-address>{SA}</mobile-node>"
        for i in range(1, count + 1)
    )


def configuration(netns: str, count: int) -> str:
    deny = (
        f'<nacm xmlns="{NACM}"><rule-list><name>ops</name><group>operators</group><rule><name>no-bindings</name>'
        f'<path xmlns:m="{NS}">/m:virtual-routers/m:virtual-router/m:home-agent/m:bindings</path>'
        "<access-operations>read</access-operations><action>deny</action></rule></rule-list>"
        "<groups><group><name>operators</name><user-name>oper</user-name></group></groups></nacm>"
    )
    return (
        f'<edit-config><target><running/></target><config><virtual-routers xmlns="{NS}"><virtual-router>'
        f"<name>{VR}</name><netns>{netns}</netns><home-agent><address>192.0.2.1</address>"
        f"<max-lifetime>600</max-lifetime></home-agent>{nodes(count)}</virtual-router></virtual-routers>"
        f"{deny}</config></edit-config>"
    )


def on_change(selection: str, damp: int = 0) -> str:
    return (
        f'<establish-subscription xmlns="{SN}" xmlns:yp="{YP}" xmlns:ds="{DS}">'
        f"<yp:datastore>ds:operational</yp:datastore><yp:datastore-subtree-filter>"
        f'<virtual-routers xmlns="{NS}"><virtual-router><home-agent>{selection}</home-agent></virtual-router>'
        f"</virtual-routers></yp:datastore-subtree-filter><yp:on-change><yp:dampening-period>{damp}"
        "</yp:dampening-period><yp:sync-on-start>false</yp:sync-on-start></yp:on-change></establish-subscription>"
    )


class Receiver:
    """A raw NETCONF session; notifications that arrive while waiting for a reply are kept."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.client = RawClient(port, user, password)
        self.notes: list[etree._Element] = []
        self.mid = 0

    def call(self, body: str) -> etree._Element:
        self.mid += 1
        self.client.send(f'<rpc xmlns="{NC_NS}" message-id="{self.mid}">{body}</rpc>'.encode())
        while True:
            msg = etree.fromstring(self.client.recv())
            if msg.tag == f"{{{NC_NS}}}rpc-reply":
                return msg
            self.notes.append(msg)

    def subscribe(self, body: str) -> int:
        reply = self.call(body)
        found = reply.find("sn:id", Q)
        assert found is not None, etree.tostring(reply).decode()
        return int(found.text)

    def next_update(self, timeout: float = 20.0) -> etree._Element:
        """The next push-change-update (the socket's timeout bounds the wait)."""
        self.client.chan.settimeout(timeout)
        while True:
            note = self.notes.pop(0) if self.notes else etree.fromstring(self.client.recv())
            if note.find("yp:push-change-update", Q) is not None:
                return note

    def close(self) -> None:
        self.client.close()


def edits(note: etree._Element) -> list[tuple[str, str, etree._Element | None]]:
    out = []
    for e in note.iterfind(".//yp:edit", Q):
        value = e.find("yp:value", Q)
        target = e.findtext("yp:target", namespaces=Q) or ""
        out.append(
            (e.findtext("yp:operation", namespaces=Q), target, value[0] if value is not None else None)
        )
    return out


def mn(netns: str, *args: str, lifetime: int = 600) -> None:
    # a first retransmission only after 5 s: a reply late on a loaded box must not make the node send
    # a new request (a renewal: one more change pushed)
    command = mn_command(netns, "--timeout", "5", "--lifetime", str(lifetime), *args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    users = (
        f'[[user]]\nname = "oper"\npassword-hash = "{hash_password("oper-secret", n_log2=10)}"\ngroups = []\n'
    )
    d = Daemon(tmp_path, free_port(), users, backend="none")
    netns = f"mipha-push-{uuid.uuid4().hex[:6]}"  # the daemon makes it; the test removes it
    try:
        d.start()
        admin = Receiver(d.port, "admin", "e2e-secret")
        try:
            reply = admin.call(configuration(netns, 20))
            assert reply.find(f"{{{NC_NS}}}ok") is not None, etree.tostring(reply).decode()
        finally:
            admin.close()
        yield d, netns
    finally:
        d.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def test_register_renew_deregister_and_expiry_arrive_as_edits(daemon) -> None:
    d, netns = daemon
    admin = Receiver(d.port, "admin", "e2e-secret")
    oper = Receiver(d.port, "oper", "oper-secret")
    try:
        sid = admin.subscribe(on_change("<bindings/>"))
        oper.subscribe(on_change("<bindings/>"))
        oper.subscribe(on_change("<statistics/>"))
        mn(netns, "register", "--home", "10.9.0.1", "--coa", "198.51.100.9")
        note = admin.next_update()
        assert note.findtext(".//yp:id", namespaces=Q) == str(sid)
        ((op, target, value),) = edits(note)
        assert (op, target) == ("create", PREFIX + "10.9.0.1,198.51.100.9")
        assert value.findtext("m:mobile-node", namespaces=Q) == "mn1"
        assert value.findtext("m:lifetime-granted", namespaces=Q) == "600"
        mn(netns, "reregister", "--home", "10.9.0.1", "--coa", "198.51.100.9")
        assert [e[:2] for e in edits(admin.next_update())] == [("replace", PREFIX + "10.9.0.1,198.51.100.9")]
        mn(netns, "deregister", "--home", "10.9.0.1", "--coa", "198.51.100.9")
        assert [e[:2] for e in edits(admin.next_update())] == [("delete", PREFIX + "10.9.0.1,198.51.100.9")]
        mn(netns, "register", "--home", "10.9.0.2", "--coa", "198.51.100.9", lifetime=2)
        assert [e[0] for e in edits(admin.next_update())] == ["create"]
        started = time.monotonic()
        assert [e[:2] for e in edits(admin.next_update())] == [("delete", PREFIX + "10.9.0.2,198.51.100.9")]
        assert time.monotonic() - started >= 1.0  # removed by the expiry, not by a message
        # the operator may not read bindings: its statistics subscription tells what happened, its
        # bindings subscription never got anything (updates leave in order: a binding edit for it
        # would have come before the statistics that count the registration)
        seen_accepted = 0
        while seen_accepted < 3:
            for _, target, value in edits(oper.next_update()):
                assert "/bindings" not in target, target
                text = value.findtext("m:accepted", namespaces=Q) if value is not None else None
                seen_accepted = max(seen_accepted, int(text or 0))
    finally:
        admin.close()
        oper.close()


def test_a_burst_within_the_dampening_period_is_one_update(daemon) -> None:
    d, netns = daemon
    admin = Receiver(d.port, "admin", "e2e-secret")
    try:
        admin.subscribe(on_change("<bindings/>", damp=300))  # 3 s
        mn(netns, "register", "--home", "10.9.0.20", "--coa", "198.51.100.9")
        first = admin.next_update()  # the first change after a quiet period goes at once
        assert len(edits(first)) == 1
        load = ["load", "--count", "10", "--home-start", "10.9.0.1", "--coa", "198.51.100.7"]
        mn(netns, *load, "--rate", "200", "--duration", "0.5")
        burst = admin.next_update()
        targets = {t for _, t, _ in edits(burst)}
        assert {PREFIX + f"10.9.0.{i},198.51.100.7" for i in range(1, 11)} <= targets, targets
        assert len(targets) == len(edits(burst))  # one edit per binding however often it registered
    finally:
        admin.close()


def test_closing_the_session_ends_its_subscriptions(daemon) -> None:
    d, _ = daemon
    admin = Receiver(d.port, "admin", "e2e-secret")
    watcher = Receiver(d.port, "admin", "e2e-secret")
    try:
        admin.subscribe(on_change("<bindings/>"))
        admin.subscribe(on_change("<statistics/>"))
        listing = f'<get><filter><subscriptions xmlns="{SN}"/></filter></get>'
        ids = watcher.call(listing).findall(".//sn:subscription/sn:id", Q)
        assert len(ids) == 2
        admin.call("<close-session/>")
        assert watcher.call(listing).findall(".//sn:subscription", Q) == []
    finally:
        admin.close()
        watcher.close()

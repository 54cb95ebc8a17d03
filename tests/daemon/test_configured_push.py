"""A configured YANG-Push subscription (RFC 8639 §2.5, RFC 8641) of a real `mipha run`, committed with
ncclient, pushing the binding table's changes over HTTPS (draft-ietf-netconf-https-notif) to a
receiver on loopback (tests/restconf/notif_receiver.py): a real registration arrives as a create, its
deregistration as a delete, and no NETCONF session is open meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "restconf"))

from daemon_harness import NS, SA, Daemon, mn_command, router_config  # noqa: E402
from free_ports import free_port  # noqa: E402
from notif_receiver import Receiver, configured_subscription, make_pki  # noqa: E402

YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
Q = {"yp": YP, "m": NS}
VR = "cfgpush"
PREFIX = f"/mipha-home-agent:virtual-routers/virtual-router={VR}/home-agent/bindings/binding="
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def mn(netns: str, *args: str) -> None:
    done = subprocess.run(
        # no retransmission of a reply late on a loaded box (a renewal: one more change pushed)
        mn_command(netns, "--timeout", "5", "--lifetime", "600", *args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def edits(post) -> list[tuple[str, str]]:
    return [
        (e.findtext("yp:operation", namespaces=Q), e.findtext("yp:target", namespaces=Q))
        for e in post.xml().iterfind(".//yp:edit", Q)
    ]


def test_registration_and_deregistration_are_pushed_to_the_receiver(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    receiver = Receiver(pki)
    d = Daemon(tmp_path, free_port(), backend="none")
    netns = f"mipha-cfgp-{uuid.uuid4().hex[:6]}"  # the daemon makes it; the test removes it
    try:
        d.start()
        node = f"<mobile-node><name>mn1</name><home-address>10.9.0.1</home-address>{SA}</mobile-node>"
        with d.connect() as m:
            m.edit_config(target="running", config=router_config(VR, netns, node))
            m.edit_config(target="running", config=configured_subscription(pki, receiver.port))
        receiver.wait_kind("subscription-started")
        mn(netns, "register", "--home", "10.9.0.1", "--coa", "198.51.100.9")
        created = receiver.wait_kind("push-change-update")[-1]
        assert edits(created) == [("create", PREFIX + "10.9.0.1,198.51.100.9")]
        value = created.xml().find(".//yp:value/m:binding", Q)
        assert value.findtext("m:mobile-node", namespaces=Q) == "mn1"
        mn(netns, "deregister", "--home", "10.9.0.1", "--coa", "198.51.100.9")
        removed = receiver.wait_kind("push-change-update", 2)[-1]
        assert edits(removed) == [("delete", PREFIX + "10.9.0.1,198.51.100.9")]
    finally:
        d.stop()
        receiver.close()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)

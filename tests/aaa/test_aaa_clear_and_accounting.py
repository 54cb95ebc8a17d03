"""AAA against `mipha run` and a real FreeRADIUS: a clear-bindings of thousands of AAA bindings (in
pages), and accounting turned on while AAA bindings are held.

While the clear runs the daemon answers a NETCONF <get> (it sees the clear half done: the loop was not
held for the whole clear) and a new AAA node's first registration; that node's binding, registered after
the clear began, stays.  Every binding that existed before is gone from the engine, the AAA cache and the
kernel, and FreeRADIUS's detail file holds one Accounting-Stop (Admin-Reset) for each of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lxml import etree

from ha.protocol import SecurityAssociation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataplane"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from aaa_lab import aaa_lab
from daemon_harness import MIPHA, NS
from dataplane_scenario import kernel_objects
from test_aaa_freeradius import MobileNodes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

HA = "10.77.255.1"
SECRET = "clear-secret"
KEY = b"clear-mn-ha-key-0123456789"
COUNT = 3000
LO = (f"{HA}/32",)  # on the namespace's loopback
Q = f"{{{NS}}}"


def users(first: int, last: int) -> str:
    return "".join(
        f'clear{i}@example.net\tCleartext-Password := "lookup-pass"\n'
        f'\tFramed-Pool = "clear-pool",\n\tERX-Mobile-IP-SPI = 256,\n\tERX-Mobile-IP-Key = "{KEY.decode()}"\n\n'
        for i in range(first, last + 1)
    )


def config(netns: str) -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>clear</name><netns>{netns}</netns>
  <home-agent><address>{HA}</address><max-lifetime>3600</max-lifetime>
    <authentication>aaa</authentication></home-agent>
  <aaa><server><address>127.0.0.1</address><secret>{SECRET}</secret></server>
    <lookup-password>lookup-pass</lookup-password><accounting>true</accounting></aaa>
  <address-pool><name>clear-pool</name><range><start>10.90.0.1</start><end>10.90.255.254</end></range></address-pool>
</virtual-router></virtual-routers></config>"""


def is_start(record: dict[str, str]) -> bool:
    return record.get("Acct-Status-Type") == "Start"


def counts(m) -> tuple[int, int]:
    """(bindings, cached AAA subscribers) of the virtual router."""
    flt = (
        f"<virtual-routers xmlns='{NS}'><virtual-router><name>clear</name><home-agent><statistics>"
        "<bindings/></statistics></home-agent><aaa><statistics><cached-subscribers/></statistics></aaa>"
        "</virtual-router></virtual-routers>"
    )
    root = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    return int(root.findtext(f".//{Q}bindings") or 0), int(root.findtext(f".//{Q}cached-subscribers") or 0)


def test_a_paged_clear_answers_meanwhile_and_leaves_nothing_behind(tmp_path: Path) -> None:
    bound_users = users(1, COUNT + 1)
    with aaa_lab(
        tmp_path, name="clear", secret=SECRET, addresses=LO, users=bound_users, config=config
    ) as lab:
        netns, radiusd, daemon = lab.netns, lab.radiusd, lab.daemon
        load = subprocess.run(
            ["ip", "netns", "exec", netns, MIPHA, "mn", "--ha", HA, "--key", KEY.hex(), "--spi", "256",
             "--lifetime", "3600", "--timeout", "3", "--retries", "2", "--json", "load", "--count", str(COUNT),
             "--nai-pattern", "clear{i}@example.net", "--coa", "10.88.0.1", "--rate", "1500",
             "--duration", str(COUNT / 1500), "--window", "512"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        report = json.loads(load.stdout)
        bound = report["accepted"]  # (as many as the loader sent in its time: most)
        assert bound == report["transactions"] >= COUNT // 2, load.stdout + load.stderr
        deadline = time.monotonic() + 30
        while len(starts := {r["Acct-Session-Id"] for r in radiusd.accounting() if is_start(r)}) < bound:
            assert time.monotonic() < deadline, f"{len(starts)} Accounting-Starts of {bound}"
            time.sleep(0.2)
        with daemon.connect() as m, daemon.connect() as watcher:
            assert counts(watcher) == (bound, bound)
            assert len(kernel_objects(netns)["routes"]) == bound
            rpc = etree.fromstring(
                f'<clear-bindings xmlns="{NS}"><virtual-router>clear</virtual-router></clear-bindings>'
            )
            answer: dict[str, object] = {}

            def clear() -> None:
                reply = m.dispatch(rpc)
                answer["cleared"] = int(etree.fromstring(reply.xml.encode()).findtext(f".//{Q}cleared"))
                answer["done"] = True

            clearing = threading.Thread(target=clear)
            clearing.start()
            seen: list[int] = []
            deadline = time.monotonic() + 60
            while "done" not in answer and time.monotonic() < deadline:  # <get> answered mid-clear
                seen.append(counts(watcher)[0])
                if 0 < seen[-1] < bound:
                    break
            assert any(0 < n < bound for n in seen), f"no <get> answered while the clear ran: {seen}"
            mns = MobileNodes(netns)  # a node nobody registered yet: its look-up and binding come after
            newcomer = mns.session(f"clear{COUNT + 1}@example.net", SecurityAssociation(256, KEY))
            outcome, _ = mns.register(newcomer)
            assert outcome.code == 0
            clearing.join(60)
            assert answer.get("cleared") == bound
            assert counts(watcher) == (1, 1)
        routes = kernel_objects(netns)["routes"]
        assert len(routes) == 1 and str(outcome.home_address) in routes[0], routes

        def stopped(r: dict[str, str]) -> bool:
            return r.get("Acct-Status-Type") == "Stop" and r.get("Acct-Terminate-Cause") == "Admin-Reset"

        deadline = time.monotonic() + 30  # (a retransmitted record may be written twice: sessions count)
        while len(stops := {r["Acct-Session-Id"] for r in radiusd.accounting() if stopped(r)}) < bound:
            assert time.monotonic() < deadline, f"{len(stops)} Accounting-Stops of {bound}"
            time.sleep(0.2)
        assert stops == starts
        newest = [r for r in radiusd.accounting() if r.get("User-Name") == f"clear{COUNT + 1}@example.net"]
        assert [r["Acct-Status-Type"] for r in newest] == ["Start"]
        assert IPv4Address(newest[0]["Framed-IP-Address"]) == outcome.home_address


def test_accounting_turned_on_adopts_the_sessions_of_bindings_held(tmp_path: Path) -> None:
    """Bindings made while ``accounting`` is false are accounted from when it turns true: no Start
    (it was not sent then), and their Stop carries the session they were given."""

    def off(netns: str) -> str:
        return config(netns).replace("<accounting>true</accounting>", "<accounting>false</accounting>")

    with aaa_lab(tmp_path, name="acct", secret=SECRET, addresses=LO, users=users(1, 2), config=off) as lab:
        netns, radiusd, daemon = lab.netns, lab.radiusd, lab.daemon
        mns = MobileNodes(netns)
        first, second = (mns.session(f"clear{i}@example.net", SecurityAssociation(256, KEY)) for i in (1, 2))
        assert mns.register(first)[0].code == 0
        with daemon.connect() as m:
            m.edit_config(target="running", config=config(netns))
            sessions = {
                b.findtext(f"{Q}home-address"): b.findtext(f"{Q}acct-session-id")
                for b in etree.fromstring(
                    m.get(filter=("subtree", f'<virtual-routers xmlns="{NS}"/>')).data_xml.encode()
                ).iter(f"{Q}binding")
            }
        assert mns.register(second)[0].code == 0  # bound with accounting on: a Start
        assert mns.register(first, lifetime=0, care_of_address=first.home_address)[0].code == 0

        def of(nai: str, status: str):
            return lambda r: r.get("User-Name") == nai and r.get("Acct-Status-Type") == status

        (stop,) = radiusd.wait_accounting(of("clear1@example.net", "Stop"))
        assert stop["Acct-Session-Id"] == sessions[str(first.home_address)]
        assert stop["Acct-Terminate-Cause"] == "User-Request"
        assert radiusd.wait_accounting(of("clear2@example.net", "Start"))
        assert not [r for r in radiusd.accounting() if of("clear1@example.net", "Start")(r)]

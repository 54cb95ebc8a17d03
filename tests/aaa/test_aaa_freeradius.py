"""AAA end to end: `mipha run` configured over NETCONF, real registrations over UDP, a real FreeRADIUS.

One network namespace holds the home agent (its virtual router), FreeRADIUS on 127.0.0.1 and the
mobile nodes' socket; everything is removed at the end.  Cases: ERX set, 3GPP2 pair, Framed-Pool,
MN-AAA (CHAP) accept and reject, Access-Reject, an Accept without a key, timeout and failover, a bad
RADIUS authenticator, retransmissions during a look-up, accounting Start/Interim/Stop read back from
FreeRADIUS's detail file, a Disconnect-Request from radclient, restart with AAA bindings restored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lxml import etree

from ha.aaa import radius
from ha.mn.session import UNSPECIFIED, MobileNodeSession
from ha.protocol import SecurityAssociation, pull_registration_reply
from ha.transport import open_udp_socket
from mipha.journal import records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from aaa_lab import aaa_lab
from daemon_harness import NS, Daemon
from freeradius import FreeRadius

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

HA = "10.77.255.1"
SECRET = "s3cret-radius"
ERX_KEY = b"erx-mn-ha-key-0123456789"
CHAP_KEY = b"chap-mn-ha-key-0123456789"
TGPP2_KEY = b"3gpp2-key-0123456789"
COA = IPv4Address("10.88.0.1")
COA2 = IPv4Address("10.88.0.2")
Q = f"{{{NS}}}"
#: RADIUS timeout 1 s, one retry: a look-up's timeout path takes 2 s, for tests that tell an answer
#: given at once from one given after that path (the lab's 300 ms would leave a loaded box 150 ms)
SLOW_TIMEOUT = ("<timeout>300</timeout><retries>1</retries>", "<timeout>1000</timeout><retries>1</retries>")


def vr_config(
    netns: str, servers: list[str], *, extra: str = "", authentication: str = "local-then-aaa"
) -> str:
    server_xml = "".join(f"<server><address>{a}</address><secret>{SECRET}</secret></server>" for a in servers)
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>aaa</name><netns>{netns}</netns>
  <home-agent><address>{HA}</address><max-lifetime>600</max-lifetime>
    <authentication>{authentication}</authentication></home-agent>
  <aaa xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="replace">{server_xml}
    <lookup-password>lookup-pass</lookup-password><timeout>300</timeout><retries>1</retries>{extra}</aaa>
  <address-pool><name>aaa-pool</name><range><start>10.77.1.1</start><end>10.77.1.50</end></range></address-pool>
</virtual-router></virtual-routers></config>"""


class MobileNodes:
    """Registrations from a socket inside the namespace (the mobile node's side, synchronous)."""

    def __init__(self, netns: str) -> None:
        self.sock = open_udp_socket("127.0.0.1", 0, netns)
        self.sock.setblocking(True)
        self.sock.settimeout(3.0)

    def session(self, nai: str, sa: SecurityAssociation, **kw) -> MobileNodeSession:
        return MobileNodeSession(IPv4Address(HA), UNSPECIFIED, COA, sa, nai=nai, **kw)

    def send(self, session: MobileNodeSession, **kw) -> tuple[int, bytes]:
        ident = session.next_identification(time.time())
        data = session.build(ident, **kw)
        self.sock.sendto(data, (HA, 434))
        return ident, data

    def register(self, session: MobileNodeSession, **kw):
        ident, _ = self.send(session, **kw)
        return self.receive(session, ident)

    def receive(self, session: MobileNodeSession, ident: int):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = self.sock.recv(4096)
            outcome = session.check_reply(data, ident, time.time())
            if outcome is not None:
                if outcome.accepted and session.home_address == UNSPECIFIED:
                    session.home_address = outcome.home_address
                return outcome, data
        raise AssertionError("no reply")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp, addresses = tmp_path_factory.mktemp("aaa"), (f"{HA}/32", "127.0.0.2/8")

    def config(netns: str) -> str:
        return vr_config(netns, ["127.0.0.1"])

    with aaa_lab(tmp, name="aaa", secret=SECRET, addresses=addresses, config=config) as lab:
        yield lab.netns, lab.radiusd, lab.daemon, MobileNodes(lab.netns)


def state(daemon: Daemon) -> etree._Element:
    with daemon.connect() as m:
        reply = m.get(filter=("subtree", f'<virtual-routers xmlns="{NS}"/>'))
    return etree.fromstring(reply.data_xml.encode())


def server_stats(daemon: Daemon, address: str) -> dict[str, int]:
    root = state(daemon)
    for server in root.iter(Q + "server"):
        if server.findtext(Q + "address") == address:
            stats = server.find(Q + "statistics")
            return {etree.QName(c).localname: int(c.text) for c in stats if c.text and c.text.isdigit()}
    return {}


def binding_of(daemon: Daemon, home: IPv4Address) -> dict[str, str] | None:
    for b in state(daemon).iter(Q + "binding"):
        if b.findtext(Q + "home-address") == str(home):
            return {etree.QName(c).localname: c.text or "" for c in b}
    return None


def test_erx_set_caps_lifetime_and_renewals_use_the_cache(lab) -> None:
    _netns, _radiusd, daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
    before = server_stats(daemon, "127.0.0.1").get("requests", 0)
    outcome, _ = mns.register(session)
    assert outcome.code == 0 and outcome.authenticated
    assert outcome.home_address == IPv4Address("10.77.0.10")  # Framed-IP-Address
    assert outcome.lifetime == 120  # ERX-Mobile-IP-Lifetime caps the 600 asked for
    binding = binding_of(daemon, outcome.home_address)
    assert binding is not None
    assert binding["mobile-node"] == "aaa:erx@example.net" and binding["authentication"] == "aaa"
    assert binding["key-source"] == "erx" and binding["address-source"] == "framed-ip-address"
    assert server_stats(daemon, "127.0.0.1")["requests"] == before + 1
    renewal, _ = mns.register(session)
    assert renewal.code == 0 and renewal.authenticated
    stats = server_stats(daemon, "127.0.0.1")
    assert stats["requests"] == before + 1  # the renewal was decided from the cache
    assert stats["accepts"] >= 1


def test_3gpp2_salt_encrypted_key_and_framed_pool(lab) -> None:
    _netns, _radiusd, daemon, mns = lab
    session = mns.session("tgpp2@example.net", SecurityAssociation(301, TGPP2_KEY))
    outcome, _ = mns.register(session)
    assert outcome.code == 0 and outcome.authenticated  # the reply verifies with the decrypted key
    assert IPv4Address("10.77.1.1") <= outcome.home_address <= IPv4Address("10.77.1.50")
    binding = binding_of(daemon, outcome.home_address)
    assert binding["key-source"] == "3gpp2" and binding["address-source"] == "framed-pool"


def test_mn_aaa_chap_accept_and_reject(lab) -> None:
    _netns, _radiusd, _daemon, mns = lab
    good = mns.session("chap@example.net", SecurityAssociation(302, CHAP_KEY), mn_aaa_secret=b"mn-aaa-secret")
    outcome, _ = mns.register(good)
    assert outcome.code == 0 and outcome.authenticated  # RADIUS checked the CHAP response
    assert outcome.home_address == IPv4Address("10.77.0.20")
    bad = mns.session("chap@example.net", SecurityAssociation(302, CHAP_KEY), mn_aaa_secret=b"wrong")
    bad.home_address = outcome.home_address
    outcome, data = mns.register(bad)
    assert outcome.code == 131 and not outcome.authenticated
    assert pull_registration_reply(data).mn_ha_auth is None  # an Access-Reject: unsigned


def test_access_reject_and_accept_without_key_are_131_unsigned(lab) -> None:
    _netns, _radiusd, daemon, mns = lab
    for nai in ("rejected@example.net", "nokey@example.net", "unknown@example.net"):
        outcome, data = mns.register(mns.session(nai, SecurityAssociation(303, ERX_KEY)))
        assert outcome.code == 131, nai
        assert pull_registration_reply(data).mn_ha_auth is None
    stats = server_stats(daemon, "127.0.0.1")
    assert stats["rejects"] >= 2 and stats["unusable-accepts"] >= 1


def test_accounting_start_interim_stop_in_the_detail_file(lab) -> None:
    _netns, radiusd, _daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
    outcome, _ = mns.register(session)  # cached (first test) or looked up
    assert outcome.code == 0
    moved, _ = mns.register(session, care_of_address=COA2)  # handover
    assert moved.code == 0
    gone, _ = mns.register(session, lifetime=0, care_of_address=session.home_address)
    assert gone.code == 0

    def of_erx(status: str):
        return lambda r: r.get("User-Name") == "erx@example.net" and r.get("Acct-Status-Type") == status

    start = radiusd.wait_accounting(of_erx("Start"))
    interim = radiusd.wait_accounting(of_erx("Interim-Update"))
    stop = radiusd.wait_accounting(of_erx("Stop"))
    assert start and interim and stop
    session_id = stop[-1]["Acct-Session-Id"]
    assert session_id in {r["Acct-Session-Id"] for r in start}
    assert interim[-1]["Acct-Session-Id"] == session_id
    assert interim[-1]["Calling-Station-Id"] == str(COA2)
    assert stop[-1]["Framed-IP-Address"] == "10.77.0.10"
    assert stop[-1]["Acct-Terminate-Cause"] == "User-Request"
    assert int(stop[-1]["Acct-Session-Time"]) >= 0


def test_disconnect_request_from_radclient(lab) -> None:
    netns, _radiusd, daemon, mns = lab
    session = mns.session("tgpp2@example.net", SecurityAssociation(301, TGPP2_KEY))
    outcome, _ = mns.register(session)
    assert outcome.code == 0
    home = outcome.home_address

    def radclient(attributes: str) -> str:
        return _radclient(netns, "127.0.0.1:3799", "disconnect", attributes)

    out = radclient("User-Name = tgpp2@example.net\n")
    assert "Disconnect-ACK" in out, out
    assert binding_of(daemon, home) is None
    out = radclient("User-Name = tgpp2@example.net\n")
    assert "Disconnect-NAK" in out and "Session-Context-Not-Found" in out, out


def test_timeout_failover_bad_authenticator_and_absorbed_retransmissions(lab) -> None:
    netns, _radiusd, daemon, mns = lab
    # 127.0.0.2 answers Access-Requests with a forged authenticator (wrong secret); 127.0.0.3 is silent.
    forger = open_udp_socket("127.0.0.2", 1812, netns)
    forger.setblocking(True)
    forger.settimeout(0.2)
    stop = threading.Event()

    def forge() -> None:
        while not stop.is_set():
            try:
                data, peer = forger.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            forged = radius.answer(radius.Code.ACCESS_ACCEPT, radius.parse(data), b"wrong-secret")
            forger.sendto(forged, peer)

    thread = threading.Thread(target=forge, daemon=True)
    thread.start()
    try:
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(netns, ["127.0.0.2", "127.0.0.3", "127.0.0.1"]))
        session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
        before = server_stats(daemon, "127.0.0.1").get("requests", 0)
        ident, data = mns.send(session)
        for _ in range(3):  # the node retransmits while the look-up is pending
            time.sleep(0.1)
            mns.sock.sendto(data, (HA, 434))
        outcome, _ = mns.receive(session, ident)
        assert outcome.code == 0 and outcome.authenticated
        forged = server_stats(daemon, "127.0.0.2")
        assert forged["bad-authenticators"] >= 1 and forged["accepts"] == 0 and forged["timeouts"] == 1
        assert server_stats(daemon, "127.0.0.3")["timeouts"] == 1
        assert server_stats(daemon, "127.0.0.1")["requests"] == before + 1  # one look-up, not four
        aaa = state(daemon).find(f".//{Q}aaa/{Q}statistics")
        assert int(aaa.findtext(Q + "absorbed")) >= 3
        # every server silent: 130, unsigned
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(netns, ["127.0.0.3"]))
        outcome, data = mns.register(mns.session("tgpp2@example.net", SecurityAssociation(301, TGPP2_KEY)))
        assert outcome.code == 130
        assert pull_registration_reply(data).mn_ha_auth is None
    finally:
        stop.set()
        thread.join(timeout=2)
        forger.close()
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(netns, ["127.0.0.1"]))


def test_restart_restores_aaa_bindings_without_asking_radius(lab) -> None:
    _netns, _radiusd, daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
    outcome, _ = mns.register(session)
    assert outcome.code == 0
    renewed, _ = mns.register(session)  # a short renew record: an add line before it keeps the key
    assert renewed.code == 0
    lines = records(daemon.tmp / "state" / "bindings.journal")
    ops = [line["op"] for line in lines if line.get("home_address") == str(outcome.home_address)]
    assert ops[-1] == "renew" and "add" in ops
    daemon.stop()
    daemon.start()
    binding = binding_of(daemon, outcome.home_address)
    assert binding is not None and binding["authentication"] == "aaa" and binding["key-source"] == "erx"
    session_id = binding["acct-session-id"]
    renewal, _ = mns.register(session)
    assert renewal.code == 0 and renewal.authenticated
    assert server_stats(daemon, "127.0.0.1").get("requests", 0) == 0  # restored, not looked up
    assert binding_of(daemon, outcome.home_address)["acct-session-id"] == session_id


def test_expiry_and_disconnect_send_stop_with_their_cause(lab) -> None:
    netns, radiusd, _daemon, mns = lab
    session = mns.session(
        "chap@example.net", SecurityAssociation(302, CHAP_KEY), mn_aaa_secret=b"mn-aaa-secret"
    )
    outcome, _ = mns.register(session, lifetime=2)
    assert outcome.code == 0 and outcome.lifetime == 2

    def stop_of(nai: str, cause: str):
        return lambda r: (
            r.get("User-Name") == nai
            and r.get("Acct-Status-Type") == "Stop"
            and r.get("Acct-Terminate-Cause") == cause
        )

    assert radiusd.wait_accounting(stop_of("chap@example.net", "Session-Timeout"), timeout=30)
    tgpp2 = mns.session("tgpp2@example.net", SecurityAssociation(301, TGPP2_KEY))
    assert mns.register(tgpp2)[0].code == 0
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "radclient",
            "-r",
            "1",
            "-t",
            "2",
            "127.0.0.1:3799",
            "disconnect",
            SECRET,
        ],
        input="User-Name = tgpp2@example.net\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Disconnect-ACK" in done.stdout, done.stdout + done.stderr
    assert radiusd.wait_accounting(stop_of("tgpp2@example.net", "Admin-Reset"))


def test_a_rebuilt_virtual_router_keeps_its_aaa_bindings(lab) -> None:
    _netns, _radiusd, daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
    outcome, _ = mns.register(session)
    assert outcome.code == 0
    port = f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}"><virtual-router>'
    with daemon.connect() as m:  # a new UDP port rebuilds the router's runtime: bindings move over
        m.edit_config(target="running", config=f"{port}<name>aaa</name><home-agent><udp-port>4434</udp-port>"
                      "</home-agent></virtual-router></virtual-routers></config>")  # fmt: skip
        binding = binding_of(daemon, outcome.home_address)
        assert binding is not None and binding["authentication"] == "aaa" and binding["key-source"] == "erx"
        m.edit_config(target="running", config=f"{port}<name>aaa</name><home-agent><udp-port>434</udp-port>"
                      "</home-agent></virtual-router></virtual-routers></config>")  # fmt: skip
    before = server_stats(daemon, "127.0.0.1").get("requests", 0)
    renewal, _ = mns.register(session)
    assert renewal.code == 0 and renewal.authenticated
    assert server_stats(daemon, "127.0.0.1").get("requests", 0) == before  # still cached


def _radclient(netns: str, target: str, command: str, attributes: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "radclient", "-x", "-r", "1", "-t", "2", target, command, SECRET],
        input=attributes,
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.stdout + done.stderr


def _signal(radiusd: FreeRadius, sig: signal.Signals) -> None:
    assert radiusd.proc is not None
    os.kill(radiusd.proc.pid, sig)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_coa_request_is_answered_nak_unsupported_extension(lab) -> None:
    """RFC 5176: a CoA-Request from radclient gets a CoA-NAK with Error-Cause 406; the binding stays."""
    netns, _radiusd, daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
    outcome, _ = mns.register(session)
    assert outcome.code == 0
    out = _radclient(netns, "127.0.0.1:3799", "coa", "User-Name = erx@example.net\nSession-Timeout = 30\n")
    assert "CoA-NAK" in out and "Error-Cause = Unsupported-Extension" in out, out
    assert server_stats(daemon, "127.0.0.1")["coa-requests"] >= 1
    assert binding_of(daemon, outcome.home_address) is not None
    bad = subprocess.run(  # a wrong secret: silently discarded (RFC 5176 §3.5), no answer
        ["ip", "netns", "exec", netns, "radclient", "-r", "1", "-t", "1", "127.0.0.1:3799", "coa", "wrong"],
        input="User-Name = erx@example.net\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "CoA-NAK" not in bad.stdout and "CoA-ACK" not in bad.stdout, bad.stdout


def test_status_server_probes_bring_a_failed_server_back(lab) -> None:
    """RFC 5997: each configured server is probed with Status-Server once (FreeRADIUS answers); after a
    failure such a server is not used (registrations get 130 at once, no Access-Request) until it
    answers a probe again."""
    netns, radiusd, daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))

    def fresh() -> int:  # deregister: the next registration needs RADIUS again
        outcome, _ = mns.register(session, lifetime=0, care_of_address=session.home_address)
        return outcome.code

    if mns.register(session)[0].code == 0:
        assert fresh() == 0
    answers = server_stats(daemon, "127.0.0.1").get("status-server-answers", 0)
    assert answers >= 1, "the configured server was not probed"
    with daemon.connect() as m:  # the timeout path 2 s: far from "at once" on a loaded box too
        m.edit_config(target="running", config=vr_config(netns, ["127.0.0.1"]).replace(*SLOW_TIMEOUT))
    try:
        _signal(radiusd, signal.SIGSTOP)
        assert mns.register(session)[0].code == 130  # timeout x (1 + retries)
        requests = server_stats(daemon, "127.0.0.1")["requests"]
        started = time.monotonic()
        assert mns.register(session)[0].code == 130  # not tried: it is waiting for a probe's answer
        assert time.monotonic() - started < 1.0  # its timeout path takes 2 s
        assert server_stats(daemon, "127.0.0.1")["requests"] == requests
        _signal(radiusd, signal.SIGCONT)
        _wait(
            lambda: server_stats(daemon, "127.0.0.1").get("status-server-answers", 0) > answers,
            15,
            "the failed server was not probed back into use",
        )
        assert mns.register(session)[0].code == 0
        stats = server_stats(daemon, "127.0.0.1")
        assert stats["requests"] == requests + 1 and stats["status-server-probes"] >= 2
    finally:
        _signal(radiusd, signal.SIGCONT)
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(netns, ["127.0.0.1"]))


def test_accounting_retransmissions_carry_acct_delay_time(lab) -> None:
    """RFC 2866 §5.2: a retransmitted Accounting-Request says how long it has waited (a new identifier,
    RFC 5080 §2.2.1); FreeRADIUS, stopped meanwhile, records each."""
    netns, radiusd, daemon, mns = lab
    session = mns.session("erx@example.net", SecurityAssociation(300, ERX_KEY))
    assert mns.register(session)[0].code == 0
    with daemon.connect() as m:  # whole seconds: the delay shows from the second try on
        m.edit_config(target="running", config=vr_config(netns, ["127.0.0.1"]).replace(
            "<timeout>300</timeout><retries>1</retries>", "<timeout>1000</timeout><retries>2</retries>"))  # fmt: skip
    try:
        sent = server_stats(daemon, "127.0.0.1")["accounting-requests"]
        _signal(radiusd, signal.SIGSTOP)
        stopped = time.monotonic()
        outcome, _ = mns.register(session, lifetime=0, care_of_address=session.home_address)
        assert outcome.code == 0
        # Stop sent at 0, 1 and 2 s, queued in the stopped server's socket (late timers on a loaded
        # box: wait for the three sends, and at least the 2.5 s that take)
        _wait(lambda: server_stats(daemon, "127.0.0.1")["accounting-requests"] >= sent + 3, 30,
              "the Stop was not sent three times")  # fmt: skip
        time.sleep(max(0.0, stopped + 2.5 - time.monotonic()))
    finally:
        _signal(radiusd, signal.SIGCONT)
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(netns, ["127.0.0.1"]))

    def stops(r: dict[str, str]) -> bool:
        return r.get("User-Name") == "erx@example.net" and r.get("Acct-Status-Type") == "Stop"

    _wait(lambda: len({r.get("Acct-Delay-Time") for r in radiusd.accounting() if stops(r)} - {None}) >= 3, 10,
          "FreeRADIUS did not record the retransmitted Stops")  # fmt: skip
    records = [r for r in radiusd.accounting() if stops(r)]
    delays = {int(r["Acct-Delay-Time"]) for r in records if "Acct-Delay-Time" in r}
    assert {0, 1, 2} <= delays, records
    assert len({r["Acct-Session-Id"] for r in records if r.get("Acct-Delay-Time") in ("1", "2")}) == 1


def test_max_pending_bounds_look_ups_with_130(lab) -> None:
    """``aaa/max-pending``: a registration needing one more look-up than allowed is denied 130 at once and
    counted in ``statistics/overflows``; the pending one is decided as usual."""
    netns, radiusd, daemon, mns = lab
    with daemon.connect() as m:
        m.edit_config(
            target="running",
            config=vr_config(netns, ["127.0.0.1"], extra="<max-pending>1</max-pending>").replace(
                *SLOW_TIMEOUT
            ),
        )
    first = mns.session("tgpp2@example.net", SecurityAssociation(301, TGPP2_KEY))
    second = mns.session("nokey@example.net", SecurityAssociation(304, ERX_KEY))
    try:
        _signal(radiusd, signal.SIGSTOP)
        ident1, _ = mns.send(first)
        time.sleep(0.05)
        started = time.monotonic()
        outcome, data = mns.register(second)
        assert outcome.code == 130 and time.monotonic() - started < 1.0  # a look-up: 2 s
        assert pull_registration_reply(data).mn_ha_auth is None
        aaa = state(daemon).find(f".//{Q}aaa/{Q}statistics")
        assert aaa.findtext(Q + "overflows") == "1" and aaa.findtext(Q + "pending") == "1"
        assert mns.receive(first, ident1)[0].code == 130  # RADIUS silent: its own timeout
    finally:
        _signal(radiusd, signal.SIGCONT)
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(netns, ["127.0.0.1"]))

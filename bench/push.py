"""YANG-Push on-change of the binding table under registration load, against a real `mipha run`.

    .venv/bin/python bench/push.py            # about 2 minutes (root: network namespaces)
    .venv/bin/python bench/push.py --quick    # smaller numbers, for a smoke run
    .venv/bin/python bench/push.py --configured [--no-nacm] [--quick]   # configured, over HTTPS

The daemon (data plane `none`) runs in one network namespace, the load and the NETCONF subscriber in
another, joined by a veth pair (bench/registration.py's `Namespaces`; its `RequestFactory` signs the
requests and its `load_generator` drives the unpaced load). The subscriber is a raw NETCONF client
(tests/server/nc_rawclient.py) with one on-change subscription on the bindings (dampening 0).

1. Latency: first registrations paced at `--rate` (5,000/s); for every new binding, the time from the
   registration reply reaching the mobile node to the push-change-update with its create edit
   reaching the subscriber (both processes on the same CLOCK_MONOTONIC): p50 / p99 / max, beside the
   registration round trip itself at the same pace.
2. Rate: registrations (mostly renewals: every one a replace edit) with and without the subscriber,
   alternating, in the same run — paced at `--rate` (does the home agent keep up?) and unpaced (its
   capacity): replies/s, lost requests, reply p99, how many edits the subscriber received and at what
   rate (records/s: those edits over the time from the first update's arrival to the last one's).

``--configured``: the same two measures with a configured subscription (RFC 8639 §2.5) instead of the
NETCONF subscriber: the same on-change terms committed to running (tests/restconf/notif_receiver.py's
``configured_subscription``) for each run with a subscription and deleted after it, delivered over
HTTPS-notif to that module's aiohttp receiver (TLS with its test CA, mipha's client certificate) on the
loopback of the daemon's namespace, in a child process. After each run the bench waits until the
receiver's ``sent-event-records`` stopped growing (what was queued is delivered, or dropped: the
receiver's ``dropped-event-records``, printed too) before the subscription goes. The receiver
instance's name is its NACM user (no group: read with NACM's checks, ``read-default`` permit);
``--no-nacm`` turns NACM off with the subscription's commit (the receiver reads unchecked, as the
dynamic subscriber, a superuser, does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "tests" / "restconf"))

from registration import BASE, KEY, NS_HA, NS_MN, Namespaces, RequestFactory, _pct, load_generator  # noqa: E402

from ha.protocol.replay import ntp_timestamp  # noqa: E402
from server.auth import hash_password  # noqa: E402
from server.xmlns import NC_NS  # noqa: E402

NS = "urn:mipha:yang:mipha-home-agent"
SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
SNR = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notif-receivers"
NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
PASSWORD = "bench-secret"
KEY_YANG = ":".join(f"{b:02x}" for b in KEY)
_HOME = re.compile(rb"binding=(\d+\.\d+\.\d+\.\d+),")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def daemon_config(tmp: Path, nc_port: int) -> Path:
    path = tmp / "mipha.toml"
    path.write_text(
        f'[netconf]\nlisten = "{NS_HA}:{nc_port}"\n[[user]]\nname = "admin"\n'
        f'password-hash = "{hash_password(PASSWORD, n_log2=10)}"\ngroups = ["admin"]\n'
        f'[state]\ndir = "{tmp / "state"}"\n[dataplane]\nbackend = "none"\n'
    )
    return path


def configuration(netns: str, nodes: int) -> bytes:
    sa = f"<security-association><spi>256</spi><key>{KEY_YANG}</key></security-association>"
    mns = "".join(
        f"<mobile-node><name>mn{i}</name><home-address>{BASE + i}</home-address>{sa}</mobile-node>"
        for i in range(nodes)
    )
    return (
        f'<edit-config><target><running/></target><config><virtual-routers xmlns="{NS}"><virtual-router>'
        f"<name>bench</name><netns>{netns}</netns><home-agent><address>{NS_HA}</address>"
        f"<max-lifetime>65535</max-lifetime></home-agent>{mns}</virtual-router></virtual-routers>"
        "</config></edit-config>"
    ).encode()


def _connect(port: int):
    """RawClient to the daemon's address (it binds 127.0.0.1; ours is the veth address)."""
    import paramiko
    from nc_rawclient import HELLO, RawClient

    from server.framing import Framer

    client = RawClient.__new__(RawClient)
    client.sock = socket.create_connection((str(NS_HA), port), timeout=30)
    client.transport = paramiko.Transport(client.sock)
    client.transport.connect(username="admin", password=PASSWORD)
    client.chan = client.transport.open_session(timeout=30)
    client.chan.settimeout(60)
    client.chan.invoke_subsystem("netconf")
    client.framer = Framer(1 << 31)
    client.hello = client.recv()
    client.chan.sendall(HELLO)
    client.framer.use_chunked()
    return client


def rpc(client, body: bytes, mid: int = 1) -> bytes:
    client.send(b'<rpc xmlns="%s" message-id="%d">%s</rpc>' % (NC_NS.encode(), mid, body))
    while True:
        msg = client.recv()
        if b"<rpc-reply" in msg[:200]:
            return msg


# --- children (run in the mobile nodes' namespace) ------------------------------------------------------
def subscriber(port: int, out: str) -> None:
    """Child: one on-change subscription on the bindings; records when each create edit arrived."""
    client = _connect(port)
    body = (
        f'<establish-subscription xmlns="{SN}" xmlns:yp="{YP}" '
        'xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><yp:datastore>ds:operational</yp:datastore>'
        f'<yp:datastore-subtree-filter><virtual-routers xmlns="{NS}"><virtual-router><home-agent><bindings/>'
        "</home-agent></virtual-router></virtual-routers></yp:datastore-subtree-filter><yp:on-change>"
        "<yp:sync-on-start>false</yp:sync-on-start></yp:on-change></establish-subscription>"
    )
    reply = rpc(client, body.encode())
    assert b"<id" in reply, reply
    arrived: dict[str, float] = {}
    edits = updates = 0
    first = last = 0.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    client.chan.settimeout(0.2)
    while not stop:
        try:
            msg = client.recv()
        except TimeoutError:
            continue
        last = time.perf_counter()
        first = first or last
        updates += 1
        edits += _record(arrived, msg, last)
    Path(out).write_text(
        json.dumps({"arrived": arrived, "edits": edits, "updates": updates, "first": first, "last": last})
    )
    client.close()


def _record(arrived: dict[str, float], message: bytes, at: float) -> int:
    """Notes when each binding's first edit arrived; the number of edits in ``message``."""
    for home in _HOME.findall(message):
        arrived.setdefault(home.decode(), at)
    return message.count(b"<edit>")


def receiver(pki_dir: str, out: str) -> None:
    """Child (in the home agent's namespace): the HTTPS-notif receiver on its loopback; prints its port,
    then ``started`` once subscription-started arrived; records when each create edit arrived."""
    from notif_receiver import Receiver

    pki = {name: Path(pki_dir) / f"{name}.pem" for name in ("ca", "receiver", "mipha")}
    server = Receiver(pki)
    arrived: dict[str, float] = {}
    edits = updates = 0
    first = last = 0.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(server.port, flush=True)
    while not stop:
        time.sleep(0.05)
        with server.lock:
            posts, server.posts[:] = list(server.posts), []
        for post in posts:
            if b"<push-change-update" in post.body:
                last = post.at
                first = first or last
                updates += 1
                edits += _record(arrived, post.body, post.at)
            elif b"<subscription-started" in post.body:
                print("started", flush=True)
    Path(out).write_text(
        json.dumps({"arrived": arrived, "edits": edits, "updates": updates, "first": first, "last": last})
    )
    server.close()


def subscribe_configured(port: int, receiver_port: int, pki_dir: str, nacm: bool) -> None:
    """Child: commit the configured subscription to the receiver at ``receiver_port`` (and, without
    ``nacm``, NACM turned off: the receiver reads everything unchecked)."""
    from notif_receiver import configured_subscription

    pki = {name: Path(pki_dir) / f"{name}.pem" for name in ("ca", "mipha")}
    client = _connect(port)
    config = configured_subscription(pki, receiver_port)
    if not nacm:
        off = f'<nacm xmlns="{NACM}"><enable-nacm>false</enable-nacm></nacm>'
        config = config.replace("</config>", off + "</config>")
    reply = rpc(client, f"<edit-config><target><running/></target>{config}</edit-config>".encode())
    assert b"<ok/>" in reply, reply[:2000]
    client.close()


def unsubscribe_configured(port: int) -> None:
    """Child: once the receiver's sent / dropped event records stopped growing (what was queued has
    been delivered or dropped; at most two minutes), print them and delete the subscription."""
    client = _connect(port)
    get = f'<get><filter type="subtree"><subscriptions xmlns="{SN}"/></filter></get>'.encode()
    counts: dict[str, int | None] = {}
    deadline = time.monotonic() + 120
    for mid in range(1, 1_000_000):
        state = rpc(client, get, mid)
        now = {name: _counter(state, name) for name in ("sent-event-records", "dropped-event-records")}
        if now == counts or time.monotonic() > deadline:
            break
        counts = now
        time.sleep(1.0)
    gone = (
        f'<edit-config><target><running/></target><config xmlns:nc="{NC_NS}"><subscriptions xmlns="{SN}">'
        '<subscription nc:operation="delete"><id>1</id></subscription>'
        f'<receiver-instances xmlns="{SNR}"><receiver-instance nc:operation="delete"><name>collector</name>'
        "</receiver-instance></receiver-instances></subscriptions></config></edit-config>"
    )
    reply = rpc(client, gone.encode(), 0)
    assert b"<ok/>" in reply, reply[:2000]
    client.close()
    print(json.dumps(counts))


def _counter(reply: bytes, name: str) -> int | None:
    """The value of the first element ``name`` (any prefix) in ``reply``."""
    found = re.search(rb"<(?:\w+:)?%s[^>]*>(\d+)<" % name.encode(), reply)
    return int(found.group(1)) if found else None


def paced(address: str, port: int, first: int, count: int, rate: float, out: str) -> None:
    """Child: first registrations of nodes first..first+count-1 paced at `rate`; the reply time of each."""
    factory = RequestFactory(ha=NS_HA)
    high = ntp_timestamp(time.time() + 2) & ~0xFFFFFFFF
    requests = [factory.build(first + i, identification=high | i) for i in range(count)]
    sent_at, replied = array("d", bytes(8 * count)), array("d", bytes(8 * count))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((str(NS_MN), 0))
    sock.connect((address, port))
    sock.setblocking(False)
    clock, sent, got = time.perf_counter, 0, 0
    start = clock()
    while got < count and clock() - start < count / rate + 5:
        now = clock()
        while sent < count and sent <= (now - start) * rate:
            sock.send(requests[sent])
            sent_at[sent] = now
            sent += 1
        try:
            while True:
                data = sock.recv(2048)
                index = int.from_bytes(data[16:20], "big")
                if index < count and not replied[index]:
                    replied[index] = clock()
                    got += 1
        except BlockingIOError:
            time.sleep(0.0002)
    result = {str(BASE + first + i): [sent_at[i], replied[i]] for i in range(count) if replied[i]}
    Path(out).write_text(json.dumps({"replies": result, "sent": sent}))


# --- the run ---------------------------------------------------------------------------------------------
class Run:
    """Namespaces, the daemon and its configuration; stops what it started, by PID."""

    def __init__(self, nodes: int, configured: bool = False, nacm: bool = True) -> None:
        self.nodes = nodes
        self.ns = Namespaces()
        self.tmp = Path(tempfile.mkdtemp(prefix="mipha-push-bench-"))
        self.nc_port = 8300
        self.daemon: subprocess.Popen | None = None
        self.configured, self.nacm = configured, nacm
        if configured:
            from notif_receiver import make_pki

            make_pki(self.tmp / "pki")

    def mn(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns.mn, sys.executable, __file__, *args]

    def ha(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns.ha, sys.executable, __file__, *args]

    def start(self) -> None:
        self.ns.create()
        config = daemon_config(self.tmp, self.nc_port)
        log = (self.tmp / "daemon.log").open("wb")
        self.daemon = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns.ha,
                str(Path(sys.executable).parent / "mipha"),
                "run",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        done = subprocess.run(
            self.mn("--configure", str(self.nc_port), str(self.nodes), self.ns.ha),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr + (self.tmp / "daemon.log").read_text()

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            tail = (self.tmp / "daemon.log").read_text().splitlines()[-40:]
            print(f"the daemon exited with {self.daemon.returncode}:", *tail, sep="\n", file=sys.stderr)
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.ns.destroy()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)

    def with_subscriber(self):
        out = self.tmp / f"sub-{time.monotonic_ns()}.json"
        if not self.configured:
            child = subprocess.Popen(
                self.mn("--subscriber", str(self.nc_port), str(out)), stdout=subprocess.PIPE, text=True
            )
            assert _line(child) == "ready"
            return child, out
        pki = str(self.tmp / "pki")
        child = subprocess.Popen(self.ha("--receiver", pki, str(out)), stdout=subprocess.PIPE, text=True)
        port = _line(child)
        subprocess.run(
            self.mn("--subscribe", str(self.nc_port), port, pki, str(self.nacm)), check=True, timeout=120
        )
        assert _line(child) == "started"
        return child, out

    def finish(self, child: subprocess.Popen, out: Path) -> dict:
        time.sleep(1.0)  # the last pushes of the run arrive (the subscriber records their arrival times)
        delivery = {}
        if self.configured:  # the receiver's counters, then the subscription goes
            done = subprocess.run(
                self.mn("--unsubscribe", str(self.nc_port)), capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            delivery = json.loads(done.stdout)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
        return json.loads(out.read_text()) | delivery

    def latency(self, first: int, count: int, rate: float) -> dict:
        child, out = self.with_subscriber()
        replies_file = self.tmp / "paced.json"
        args = ("--paced", str(NS_HA), "434", str(first), str(count), str(rate), str(replies_file))
        subprocess.run(self.mn(*args), check=True, timeout=count / rate + 60)
        pushed = self.finish(child, out)
        replies = json.loads(replies_file.read_text())["replies"]
        gaps = [pushed["arrived"][h] - r[1] for h, r in replies.items() if h in pushed["arrived"]]
        rtts = [r[1] - r[0] for r in replies.values()]
        return {
            "registrations": count,
            "replied": len(replies),
            "pushed": len(gaps),
            "push_p50_ms": _pct(gaps, 50) * 1e3,
            "push_p99_ms": _pct(gaps, 99) * 1e3,
            "push_max_ms": max(gaps) * 1e3,
            "rtt_p50_ms": _pct(rtts, 50) * 1e3,
            "rtt_p99_ms": _pct(rtts, 99) * 1e3,
            "updates": pushed["updates"],
            "dropped": pushed.get("dropped-event-records"),
        }

    def rate(self, duration: float, window: int, subscribed: bool, pace: float = 0) -> dict:
        child = out = None
        if subscribed:
            child, out = self.with_subscriber()
        args = ("--load", str(NS_HA), "434", str(self.nodes), str(duration), str(window), str(pace))
        done = subprocess.run(self.mn(*args), capture_output=True, text=True, timeout=duration + 120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        if child is not None and out is not None:
            pushed = self.finish(child, out)
            report["edits_pushed"] = pushed["edits"]
            took = pushed["last"] - pushed["first"]  # from the first update's arrival to the last's
            report["records_per_s"] = pushed["edits"] / took if took > 0 else 0.0
            report["dropped"] = pushed.get("dropped-event-records")
        return report


def _line(child: subprocess.Popen, timeout: float = 60.0) -> str:
    """The child's next line of output (it must come within ``timeout``)."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, "the child said nothing"
    return child.stdout.readline().strip()


def configure(nc_port: int, nodes: int, netns: str) -> None:
    """Child: the virtual router with `nodes` mobile nodes, over NETCONF (waits for the daemon)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client = _connect(nc_port)
            break
        except OSError:
            assert time.monotonic() < deadline, "the daemon did not listen"
            time.sleep(0.2)
    reply = rpc(client, configuration(netns, nodes))
    assert b"<ok/>" in reply, reply[:2000]
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument(
        "--configured", action="store_true", help="a configured subscription over HTTPS-notif instead"
    )
    parser.add_argument(
        "--no-nacm", action="store_true", help="with --configured: NACM off (the receiver reads unchecked)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/push.py needs root (network namespaces)")
    nodes = 5000 if args.quick else 30000
    count = 2000 if args.quick else 20000
    rounds, duration = (1, 3.0) if args.quick else (3, 6.0)
    run = Run(nodes, args.configured, not args.no_nacm)
    try:
        run.start()
        latency = run.latency(0, count, args.rate)
        rates: dict[str, list[dict]] = {k: [] for k in (PACED, PACED_SUB, UNPACED, UNPACED_SUB)}
        for _ in range(rounds):
            rates[PACED].append(run.rate(duration, 64, False, args.rate))
            rates[PACED_SUB].append(run.rate(duration, 64, True, args.rate))
            rates[UNPACED].append(run.rate(duration, 64, False))
            rates[UNPACED_SUB].append(run.rate(duration, 64, True))
    finally:
        run.stop()
    kind = "dynamic subscription, NETCONF"
    if args.configured:
        kind = "configured subscription, HTTPS-notif receiver" + (", NACM off" if args.no_nacm else "")
    report(latency, rates, args.rate, kind)


PACED, PACED_SUB = "paced, without subscriber", "paced, with subscriber"
UNPACED, UNPACED_SUB = "unpaced, without subscriber", "unpaced, with subscriber"


def report(latency: dict, rates: dict[str, list[dict]], rate: float, kind: str) -> None:
    configured = kind.startswith("configured")
    at = "the receiver" if configured else "the subscriber"
    print(
        f"## On-change push of new bindings at {rate:,.0f} registrations/s "
        f"(first registrations, dampening 0; {kind})"
    )
    dropped = f", {latency['dropped']:,} dropped" if latency.get("dropped") is not None else ""
    print(
        f"registrations {latency['registrations']:,}, replied {latency['replied']:,}, "
        f"pushed {latency['pushed']:,} "
        f"in {latency['updates']:,} push-change-updates{dropped}"
    )
    print(
        f"reply at the node → push at {at}: p50 {latency['push_p50_ms']:.1f} ms, "
        f"p99 {latency['push_p99_ms']:.1f} ms, max {latency['push_max_ms']:.1f} ms"
    )
    print(
        f"baseline, registration round trip at the same pace: p50 {latency['rtt_p50_ms']:.2f} ms, "
        f"p99 {latency['rtt_p99_ms']:.2f} ms"
    )
    print(f"\n## Registration rate (renewals mostly, window 64), alternating runs ({kind})")
    for name, runs in rates.items():
        values = [r["rate"] for r in runs]
        lost = sum(r["lost"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        extra = ""
        if name in (PACED_SUB, UNPACED_SUB):
            pushed = sum(r["edits_pushed"] for r in runs)
            records = statistics.median(r["records_per_s"] for r in runs)
            extra = f", {pushed:,} edits pushed ({records:,.0f} records/s median)"
            if configured:
                extra += f", {sum(r['dropped'] or 0 for r in runs):,} dropped"
        print(
            f"{name:>32}: {statistics.median(values):,.0f}/s median of {[round(v) for v in values]}, "
            f"reply p99 {p99:.1f} ms, {lost} lost{extra}"
        )
    for base, sub in ((PACED, PACED_SUB), (UNPACED, UNPACED_SUB)):
        ratio = statistics.median(r["rate"] for r in rates[sub]) / statistics.median(
            r["rate"] for r in rates[base]
        )
        print(f"ratio {sub} / without: {ratio:.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--subscriber":
        subscriber(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--paced":
        paced(
            sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        receiver(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--subscribe":
        subscribe_configured(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "True")
    elif len(sys.argv) > 1 and sys.argv[1] == "--unsubscribe":
        unsubscribe_configured(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--configure":
        configure(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--load":
        a = sys.argv[2:]
        load_generator(a[0], int(a[1]), int(a[2]), float(a[3]), int(a[4]), float(a[5]), False)
    else:
        main()

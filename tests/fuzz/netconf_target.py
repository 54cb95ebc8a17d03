"""Fuzz target: NETCONF framing (RFC 6242, both modes), hello handling, the hardened XML parser and
RPC dispatch with every operation's argument parsing, through real `NetconfSession` objects on an
in-process core (tests/server/nc_harness: no SSH, the session's own event loop).

The first input byte picks what the rest is (``mode``) and who sends it (bit 2: the superuser or a
user NACM restricts); the second byte how the stream is cut into reads:
0 bytes before any hello (hello parsing, end-of-message framing);
1 / 2 a raw stream after a 1.1 / 1.0 hello (chunked / end-of-message framing, then RPCs);
3 the body of one well-framed ``<rpc>`` after a 1.1 hello, which must get exactly one <rpc-reply>
  (or end the session).

Checked after every input: nothing escapes ``data_received``, no ERROR line from ``server``
(its broad handler logs there before answering "internal error"), every message the server wrote
parses as XML, every RPC task finishes within 10 s of loop time.  The in-process core is rebuilt every
``RESET_EVERY`` inputs, so edits the fuzzer gets accepted do not pile up.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from fuzz_common import BugFound, ErrorLog
from lxml import etree
from nc_harness import HA, HELLO_11, Bare, Client, Harness, edit, idle, mn, vr

from server.xmlns import NC_BASE_10, NC_NS

RESET_EVERY = 500
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
HELLO_10 = (
    f'<hello xmlns="{NC_NS}"><capabilities><capability>{NC_BASE_10}</capability></capabilities></hello>'
).encode()
REPLY = f"{{{NC_NS}}}rpc-reply"
M = "urn:mipha:yang:mipha-home-agent"
NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
WD = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"
NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
#: RFC 8341 configuration the seeds write (the fuzzed "guest" is in group operators): groups, and
#: rule-lists with path, rpc-name and notification rules, the defaults switched
NACM_EDITS = (
    "<groups><group><name>operators</name><user-name>guest</user-name></group></groups>",
    "<rule-list><name>ops</name><group>operators</group>"
    f'<rule><name>p</name><path xmlns:m="{M}">/m:virtual-routers/m:virtual-router/m:mobile-node</path>'
    "<access-operations>read update</access-operations><action>permit</action></rule>"
    "<rule><name>r</name><module-name>ietf-netconf</module-name><rpc-name>edit-config</rpc-name>"
    "<access-operations>exec</access-operations><action>permit</action></rule>"
    "<rule><name>n</name><notification-name>binding-created</notification-name><action>deny</action></rule>"
    "</rule-list>",
    "<read-default>deny</read-default><write-default>permit</write-default><exec-default>deny</exec-default>",
    "<enable-nacm>false</enable-nacm>",
)


class NetconfTarget:
    def __init__(self) -> None:
        self.errors = ErrorLog("server")
        self.harness: Harness | None = None
        self.inputs = 0

    def seeds(self) -> list[bytes]:
        bodies = [
            "<get/>",
            "<get-config><source><running/></source></get-config>",
            f'<get-config><source><running/></source><filter type="subtree"><virtual-routers xmlns="{M}"/></filter></get-config>',
            '<get><filter type="xpath" select="/mipha:virtual-routers" xmlns:mipha="urn:mipha:yang:mipha-home-agent"/></get>',
            edit(vr(HA + mn("mn1", "10.1.0.1", 256))),
            edit(
                vr(HA + mn("mn1", "10.1.0.1", 256)),
                "candidate",
                "<default-operation>replace</default-operation>",
            ),
            edit(
                vr(HA),
                "running",
                "<test-option>test-then-set</test-option><error-option>rollback-on-error</error-option>",
            ),
            f'<edit-config><target><running/></target><config><virtual-routers xmlns="{M}" xmlns:nc="{NC_NS}"><virtual-router nc:operation="delete"><name>default</name></virtual-router></virtual-routers></config></edit-config>',
            "<commit/>",
            "<commit><confirmed/><confirm-timeout>1</confirm-timeout></commit>",
            "<cancel-commit/>",
            "<discard-changes/>",
            "<validate><source><candidate/></source></validate>",
            "<lock><target><running/></target></lock>",
            "<unlock><target><candidate/></target></unlock>",
            "<copy-config><target><candidate/></target><source><running/></source></copy-config>",
            "<delete-config><target><startup/></target></delete-config>",
            "<kill-session><session-id>1</session-id></kill-session>",
            "<close-session/>",
            '<create-subscription xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0"/>',
            '<get-schema xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"><identifier>mipha-home-agent</identifier></get-schema>',
            '<get-data xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-nmda" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><datastore>ds:operational</datastore></get-data>',
            f'<get-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:running</datastore><subtree-filter><virtual-routers xmlns="{M}"/></subtree-filter><config-filter>true</config-filter><max-depth>3</max-depth></get-data>',
            f'<get-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:operational</datastore><xpath-filter xmlns:m="{M}">/m:virtual-routers/m:virtual-router/m:home-agent</xpath-filter><with-defaults xmlns="{WD}">report-all</with-defaults></get-data>',
            f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:running</datastore><config>{vr(HA + mn("mn2", "10.1.0.2", 257))}</config></edit-data>',
            f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:candidate</datastore><default-operation>replace</default-operation><config>{vr(HA)}</config></edit-data>',
            f'<get-config><source><running/></source><with-defaults xmlns="{WD}">report-all-tagged</with-defaults></get-config>',
            *(edit(f'<nacm xmlns="{NACM}">{body}</nacm>') for body in NACM_EDITS),
            f'<edit-config><target><running/></target><config><nacm xmlns="{NACM}" xmlns:nc="{NC_NS}"><rule-list nc:operation="remove"><name>ops</name></rule-list></nacm></config></edit-config>',
            f'<clear-bindings xmlns="{M}"><virtual-router>default</virtual-router></clear-bindings>',
        ]
        rpc_seeds = [bytes([3, 255]) + body.encode() for body in bodies]
        guest = 3 | 4  # the same RPCs from the user NACM restricts
        rpc_seeds += [bytes([guest, 255]) + body.encode() for body in (bodies[0], bodies[4], bodies[-1])]
        rpc = f'<rpc xmlns="{NC_NS}" message-id="7"><get/></rpc>'.encode()
        return [
            *rpc_seeds,
            bytes([0, 3]) + HELLO_11 + b"]]>]]>" + b"\n#%d\n%s\n##\n" % (len(rpc), rpc),
            bytes([0, 255]) + HELLO_10 + b"]]>]]>" + rpc + b"]]>]]>",
            bytes([1, 255]) + b"\n#%d\n%s\n##\n" % (len(rpc), rpc) + b"\n#3\n<rp\n#2\nc>\n##\n",
            bytes([2, 9]) + rpc + b"]]>]]>" + rpc,
        ]

    def one(self, data: bytes) -> None:
        if len(data) < 2:
            return
        if self.harness is None or self.inputs % RESET_EVERY == 0:
            self.reset()
        self.inputs += 1
        h = self.harness
        assert h is not None
        mode, user = data[0] & 3, ("admin", frozenset({"admin"}))
        if data[0] & 4:
            user = ("guest", frozenset({"operators"}))
        step, payload = data[1] + 1, data[2:]
        written: list[bytes] = []
        if mode in (0, 2):
            session: Bare | Client = Bare(h)
            session.out.receive_data = self.collector(written, session.out.receive_data)
            if mode == 2:
                h.feed(session.sess, HELLO_10 + b"]]>]]>")
        else:
            session = Client(h, *user)
            session.inbox.clear()
        if mode == 3:
            message = b'<rpc xmlns="%s" message-id="1">%s</rpc>' % (NC_NS.encode(), payload)
            self.feed(h, session.sess, [b"\n#%d\n%s\n##\n" % (len(message), message)])
        else:
            self.feed(
                h, session.sess, [payload[start : start + step] for start in range(0, len(payload), step)]
            )
        self.errors.check()
        if isinstance(session, Client):
            written = list(session.inbox)
        replies = 0
        for message in written:
            try:
                replies += etree.fromstring(message).tag == REPLY
            except etree.XMLSyntaxError as error:
                raise BugFound(f"the server wrote malformed XML: {message[:200]!r}") from error
        if mode == 3 and replies != 1 and not session.closed and not session.sess.closed:
            raise BugFound(f"{replies} replies to one well-framed <rpc>")
        if not session.sess.closed:
            session.sess.connection_lost()
        self.settle(h)
        self.errors.check()

    @staticmethod
    def collector(written: list[bytes], receive):
        def write(data: bytes) -> None:
            receive(data)
            written.append(data)

        return write

    def feed(self, h: Harness, sess, reads: list[bytes]) -> None:
        """Deliver the reads as callbacks of the session's loop, in order (as asyncssh calls
        ``data_received``; tasks an RPC starts may run between two reads or after all of them), then
        run the loop until every task is done.  An exception escaping ``data_received`` is a bug."""
        escaped: list[BaseException] = []

        def deliver(data: bytes) -> None:
            try:
                sess.data_received(data)
            except Exception as error:  # the fuzzer reports it
                escaped.append(error)

        for data in reads:
            h.loop.call_soon(deliver, data)
        self.settle(h)
        if escaped:
            raise BugFound(f"data_received raised {escaped[0]!r}") from escaped[0]

    @staticmethod
    def settle(h: Harness) -> None:
        try:
            h.run_until(lambda: idle(h), limit=10.0)
        except AssertionError as error:
            raise BugFound("an RPC task did not finish within 10 s of loop time") from error

    def close(self) -> None:
        self.errors.close()
        self.drop()

    def drop(self) -> None:
        if self.harness is not None:
            self.harness.close()
            shutil.rmtree(self.harness.state_dir, ignore_errors=True)
            self.harness = None

    def reset(self) -> None:
        self.drop()
        # the datastores' fsyncs cost more than the parsing under test: keep them on tmpfs
        self.harness = Harness(Path(tempfile.mkdtemp(prefix="mipha-fuzz-", dir=SCRATCH)))

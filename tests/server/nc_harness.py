"""Drive NetconfSession objects in-process (no SSH): exact replies, fast, with a private event loop.

Bytes are fed to the session inside the loop (as asyncssh does); waiting for a reply runs the loop
until the server wrote one, so RPCs finished by a task (configuration changes) are awaited too."""

from __future__ import annotations

import asyncio
import tempfile
from collections import deque
from pathlib import Path

from lxml import etree

from server.app import build_core
from server.config import ServerConfig
from server.framing import NEED_DATA, Framer
from server.nacm import Principal
from server.protocol import NetconfSession
from server.xmlns import NC_BASE_10, NC_BASE_11, NC_NS

NS = {"nc": NC_NS, "m": "urn:mipha:yang:mipha-home-agent"}
M = "urn:mipha:yang:mipha-home-agent"
HELLO_11 = (
    f'<hello xmlns="{NC_NS}"><capabilities><capability>{NC_BASE_10}</capability>'
    f"<capability>{NC_BASE_11}</capability></capabilities></hello>"
).encode()


class Client:
    """One in-process session; `rpc()` returns the parsed <rpc-reply>."""

    def __init__(self, h: Harness, user: str = "admin", groups=frozenset({"admin"})) -> None:
        self.h = h
        self.out = Framer()  # parses what the server writes
        self.inbox: deque[bytes] = deque()  # messages from the server not read yet
        self.closed = False
        self.sess = NetconfSession(h.core, Principal(user, frozenset(groups)), "127.0.0.1", self._w, self._c)
        self.sess.start()
        self.hello = etree.fromstring(self._next())
        h.feed(self.sess, HELLO_11 + b"]]>]]>")
        self.out.use_chunked()
        self._mid = 0

    def _w(self, data: bytes | list[bytes]) -> None:
        for part in [data] if isinstance(data, bytes) else data:
            self.out.receive_data(part)
        while (m := self.out.next_message()) is not NEED_DATA:
            self.inbox.append(m)

    def _c(self) -> None:
        self.closed = True

    def _next(self) -> bytes:
        if not self.inbox:
            self.h.run_until(lambda: self.inbox or self.closed)
        assert self.inbox, "no message from server"
        return self.inbox.popleft()

    def reply(self) -> etree._Element:
        """The next reply (after `send`), running the loop until it arrives."""
        return etree.fromstring(self._next())

    def pending(self) -> list[etree._Element]:
        """Messages already written by the server (runs nothing)."""
        out = [etree.fromstring(m) for m in self.inbox]
        self.inbox.clear()
        return out

    def send(self, payload: bytes) -> None:
        self.h.feed(self.sess, b"\n#%d\n%s\n##\n" % (len(payload), payload))

    def send_rpc(self, body: str) -> None:
        """Send an <rpc> without waiting for its reply (read it later with `reply()`)."""
        self._mid += 1
        self.send(f'<rpc xmlns="{NC_NS}" message-id="{self._mid}">{body}</rpc>'.encode())

    def rpc(self, body: str, attrs: str | None = None) -> etree._Element:
        self._mid += 1
        a = attrs if attrs is not None else f'message-id="{self._mid}"'
        self.send(f'<rpc xmlns="{NC_NS}" {a}>{body}</rpc>'.encode())
        return etree.fromstring(self._next())

    def ok(self, body: str) -> None:
        r = self.rpc(body)
        assert r.find("nc:ok", NS) is not None, etree.tostring(r).decode()

    def data(self, body: str) -> etree._Element:
        r = self.rpc(body)
        d = r.find("nc:data", NS)
        assert d is not None, etree.tostring(r).decode()
        return d


def errors(reply: etree._Element) -> list[dict[str, object]]:
    """Each <rpc-error> as a dict of its leaves (error-info children flattened under 'info')."""
    out = []
    for e in reply.findall("nc:rpc-error", NS):
        d: dict[str, object] = {}
        for c in e:
            name = etree.QName(c).localname
            if name == "error-info":
                d["info"] = {etree.QName(i).localname: (i.text or "").strip() for i in c}
            else:
                d[name] = (c.text or "").strip()
        out.append(d)
    return out


class Bare:
    """A session that has sent no hello yet (for hello and pre-hello tests)."""

    def __init__(self, h: Harness) -> None:
        self.out = Framer()
        self.closed = False
        self.sess = NetconfSession(h.core, Principal("x"), None, self.out.receive_data, self._c)
        self.sess.start()

    def _c(self) -> None:
        self.closed = True


class Harness:
    """A NetconfCore with a temp state dir and an event loop for timers."""

    def __init__(self, state_dir: Path | None = None, *, subscribers=None, providers=None, **kw) -> None:
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory()
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.core = build_core(ServerConfig(state_dir=state_dir, **kw), None, subscribers, providers)
        self.core.loop = self.loop

    def client(self, user: str = "admin", groups=frozenset({"admin"})) -> Client:
        return Client(self, user, groups)

    def advance(self, seconds: float) -> None:
        """Let the loop run (timers such as confirm-timeout fire)."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def feed(self, sess: NetconfSession, data: bytes) -> None:
        """Deliver bytes to a session from inside the loop (asyncssh calls data_received there)."""

        async def deliver() -> None:
            sess.data_received(data)

        self.loop.run_until_complete(deliver())

    def run_until(self, cond, limit: float = 30.0) -> None:
        """Run the loop until `cond()` holds (tasks, timers); fail after `limit` seconds of loop time."""

        async def wait() -> None:
            deadline = self.loop.time() + limit
            while not cond():
                assert self.loop.time() < deadline, "condition not reached"
                await asyncio.sleep(0.001 if self.loop.time() > start + 0.05 else 0)

        start = self.loop.time()
        self.loop.run_until_complete(wait())

    def close(self) -> None:
        self.core.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        asyncio.set_event_loop(None)
        self.loop.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def vr(body: str = "", name: str = "default") -> str:
    entry = f"<virtual-router><name>{name}</name>{body}</virtual-router>"
    return f'<virtual-routers xmlns="{M}">{entry}</virtual-routers>'


def cfg(inner: str) -> str:
    return f"<config>{inner}</config>"


def edit(inner: str, target: str = "running", extra: str = "") -> str:
    return f"<edit-config><target><{target}/></target>{extra}{cfg(inner)}</edit-config>"


KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def mn(name: str, addr: str, spi: int | None = None) -> str:
    sa = f"<security-association><spi>{spi}</spi><key>{KEY}</key></security-association>" if spi else ""
    return f"<mobile-node><name>{name}</name><home-address>{addr}</home-address>{sa}</mobile-node>"


HA = "<router-id>10.0.0.1</router-id><home-agent><address>10.0.0.1</address></home-agent>"


def idle(h: Harness) -> bool:
    """No task left on the loop (sessions' RPC tasks, rollbacks) and the transaction lock free."""
    me = asyncio.current_task(h.loop)  # run_until's own waiter, when called from it
    pending = [t for t in asyncio.all_tasks(h.loop) if not t.done() and t is not me]
    return not pending and not h.core.txn_lock.locked()

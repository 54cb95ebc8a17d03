"""The SSH side (RFC 6242), the only asyncssh code: authentication and the `netconf` subsystem.

asyncssh callbacks never let an exception escape into the transport: the NETCONF session object
handles protocol errors itself, and anything unexpected closes only that channel.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncssh

from server.auth import User, verify_password
from server.core import NetconfCore
from server.nacm import Principal
from server.protocol import NetconfSession

log = logging.getLogger(__name__)
MAX_UNSENT = 256 * 1024 * 1024  # bytes queued for one channel before the session is dropped
#: A streamed reply (server/protocol.py) waits for the channel's buffer to fall under LOW once it
#: holds more than HIGH: a few parts in flight beside the SSH window, never the whole reply.
WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Keep the host key across restarts (clients pin it); create an Ed25519 key on first start."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key


class _ChannelSession(asyncssh.SSHServerSession):
    """One SSH channel carrying the netconf subsystem."""

    def __init__(self, core: NetconfCore, principal: Principal, peer: str | None) -> None:
        self._core, self._principal, self._peer = core, principal, peer
        self._chan: asyncssh.SSHServerChannel | None = None
        self._nc: NetconfSession | None = None
        self._subsystem = False
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self._chan = chan

    def pty_requested(self, term_type, term_size, term_modes) -> bool:
        return True  # some clients (scrapli) ask for a pty; the subsystem stays binary

    def shell_requested(self) -> bool:
        return False

    def exec_requested(self, command: str) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        self._subsystem = subsystem == "netconf"
        return self._subsystem

    def session_started(self) -> None:
        chan = self._chan
        assert chan is not None
        chan.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self._nc = NetconfSession(
            self._core, self._principal, self._peer, self._write, self._close, drain=self._drain
        )
        self._nc.start()

    def pause_writing(self) -> None:
        self._writable.clear()
        if self._nc is not None:
            self._nc.flow_paused()

    def resume_writing(self) -> None:
        self._writable.set()
        if self._nc is not None:
            self._nc.flow_resumed()

    async def _drain(self) -> None:
        await self._writable.wait()

    def _write(self, data: bytes | list[bytes]) -> None:
        """Write one message (bytes, or parts written in order) without ever raising into the caller
        (a notification fan-out runs inside another session's RPC): a channel that is going away
        just ends this session.  The unsent limit is checked once per message, never mid-message."""
        chan = self._chan
        if chan is None:
            return
        try:
            if chan.get_write_buffer_size() > MAX_UNSENT:
                # the client stopped reading (notifications pile up): end it rather than grow forever
                log.warning("session: client is not reading (%d bytes unsent); closing", MAX_UNSENT)
                if self._nc is not None:
                    asyncio.get_running_loop().call_soon(self._nc.terminate, "dropped")
                return
            if isinstance(data, bytes):
                chan.write(data)
            else:
                for part in data:
                    chan.write(part)
        except (OSError, asyncssh.Error, RuntimeError):
            log.info("write to a closing channel; ending the session")
            if self._nc is not None:
                asyncio.get_running_loop().call_soon(self._nc.terminate, "dropped")

    def _close(self) -> None:
        if self._chan is not None:
            chan, self._chan = self._chan, None
            chan.exit(0)  # exit-status first: OpenSSH's client reports 255 for a channel closed without one

    def data_received(self, data: bytes, datatype) -> None:
        if self._nc is not None:
            try:
                self._nc.data_received(data)
            except Exception:
                log.exception("netconf session crashed; closing its channel")
                self._nc.terminate("other")

    def eof_received(self) -> bool:
        """True keeps our half of the channel open: RPCs received before the EOF are still answered."""
        return self._nc.eof_received() if self._nc is not None else False

    def connection_lost(self, exc: Exception | None) -> None:
        self._chan = None
        self._writable.set()  # nothing waits for a channel that is gone
        if self._nc is not None:
            self._nc.connection_lost()


class _SSHServer(asyncssh.SSHServer):
    """Per-connection authentication against the configured users."""

    def __init__(
        self, core: NetconfCore, users: dict[str, User], fail_delay: float, max_sessions: int
    ) -> None:
        self._core, self._users, self._fail_delay = core, users, fail_delay
        self._max_sessions = max_sessions
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer: str | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._peer = peer[0] if peer else None

    def begin_auth(self, username: str) -> bool:
        user = self._users.get(username)
        if user is not None and user.authorized_keys and self._conn is not None:
            try:
                self._conn.set_authorized_keys(
                    asyncssh.import_authorized_keys("\n".join(user.authorized_keys))
                )
            except (asyncssh.KeyImportError, ValueError):
                log.error("bad authorized key for user %s", username)
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        user = self._users.get(username)
        stored = user.password_hash if user is not None else None
        ok = bool(stored) and await asyncio.get_running_loop().run_in_executor(
            None, verify_password, password, stored or ""
        )
        if not ok:
            log.warning("failed password login for %r from %s", username, self._peer)
            await asyncio.sleep(self._fail_delay)
        return ok

    def session_requested(self) -> asyncssh.SSHServerSession | bool:
        assert self._conn is not None
        if len(self._core.sessions) >= self._max_sessions:
            log.warning("refusing a session from %s: %d sessions open", self._peer, len(self._core.sessions))
            return False
        name = self._conn.get_extra_info("username")
        user = self._users.get(name)
        principal = Principal(name, user.groups if user else frozenset())
        return _ChannelSession(self._core, principal, self._peer)


async def listen(
    core: NetconfCore,
    *,
    host: str,
    port: int,
    users: list[User],
    host_key: asyncssh.SSHKey,
    fail_delay: float,
    login_timeout: float,
    max_sessions: int = 64,
) -> asyncssh.SSHAcceptor:
    by_name = {u.name: u for u in users}
    return await asyncssh.create_server(
        lambda: _SSHServer(core, by_name, fail_delay, max_sessions),
        host,
        port,
        server_host_keys=[host_key],
        encoding=None,
        line_editor=False,
        allow_pty=True,
        x11_forwarding=False,
        agent_forwarding=False,
        login_timeout=login_timeout,
    )

"""A RESTCONF request as the NETCONF layer sees it: a short-lived session of the authenticated user.

RESTCONF has no sessions (RFC 8040 §1.4); each request gets a fresh session id so that NETCONF locks,
the candidate's owner and netconf-config-change's changed-by name it like any other client.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import TYPE_CHECKING, cast

from server.nacm import Principal

if TYPE_CHECKING:
    from server.core import NetconfCore
    from server.protocol import NetconfSession


@dataclass
class RestconfSession:
    core: NetconfCore
    principal: Principal
    source_host: str | None
    id: int = 0
    subscription: object | None = None
    closed: bool = False
    close_after_reply: bool = False
    login_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.core.new_session_id()


def as_netconf(sess: RestconfSession) -> NetconfSession:
    """For the NETCONF layer's handlers, typed with its session: they use what a RestconfSession
    has (core, principal, id, source_host)."""
    return cast("NetconfSession", sess)


class Versions:
    """Entity-tags and last-modified times of the datastores (RFC 8040 §3.4.1.2/3), bumped by the
    datastore layer's change callbacks: every committed change of running, every candidate edit."""

    def __init__(self, core: NetconfCore) -> None:
        self.boot = format(int(dt.datetime.now(dt.UTC).timestamp() * 1000) & 0xFFFFFFFF, "x")
        self.counters: dict[str, int] = {"running": 0, "candidate": 0, "startup": 0}
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.modified: dict[str, dt.datetime] = dict.fromkeys(self.counters, now)
        self._headers: tuple[tuple[str, int, dt.datetime] | None, dict[str, str]] = (None, {})
        core.ds.on_change.append(self._changed)

    def _changed(self, name: str, _txn: object) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
        self.modified[name] = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if name == "running":  # the candidate mirrors running until someone edits it
            self.counters["candidate"] += 1
            self.modified["candidate"] = self.modified["running"]

    def etag(self, name: str) -> str:
        return f'"{self.boot}-{self.counters.get(name, 0)}"'

    def headers(self, name: str) -> dict[str, str]:
        """ETag and Last-Modified of datastore `name`: formatted once per change, not per request."""
        key = (name, self.counters.get(name, 0), self.modified[name])
        if self._headers[0] != key:
            self._headers = (
                key,
                {"ETag": self.etag(name), "Last-Modified": format_datetime(self.modified[name], usegmt=True)},
            )
        return dict(self._headers[1])

"""Operational state providers: how the daemon supplies `config false` subtrees to <get> / <get-data>.

State is built on request (sysrepo's oper-get subscription, FRR's lazy walk): a provider is asked only
when a reply needs the part of the tree it registered for, and receives the request's filter so it
can push down keys (a subtree filter naming one home-address needs one binding, not all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lxml import etree


@dataclass(frozen=True)
class StateRequest:
    """What the client asked for: the raw filter element (subtree) or XPath select with its nsmap."""

    subtree: etree._Element | None = None
    xpath: str | None = None
    nsmap: tuple[tuple[str, str], ...] = ()
    with_defaults: str = "explicit"


class OperationalProvider(Protocol):
    """Registered with the server for the top-level nodes it owns (`roots`: (namespace, name) pairs).

    `get_state` returns top-level elements shaped like the schema (e.g. a <virtual-routers> holding
    list entries with their keys and only the state leaves); the server merges them with running
    configuration, then applies the filter. It must not raise: return [] when nothing applies.
    """

    roots: frozenset[tuple[str, str]]

    def get_state(self, request: StateRequest) -> list[etree._Element]: ...

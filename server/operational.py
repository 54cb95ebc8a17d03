"""Operational state providers: how the daemon supplies `config false` subtrees to <get> / <get-data>.

State is built on request (sysrepo's oper-get subscription, FRR's lazy walk): a provider is asked only
when a reply needs the part of the tree it registered for, and receives the request's filter so it
can push down keys (a subtree filter naming one home-address needs one binding, not all of them).

Large lists can be handed over pre-serialised (raw splicing), so that 100k bindings never become an
lxml tree that the server copies and filters again:

- the provider returns, at the place of the list's parent container, a placeholder element whose
  only content is the text `raw_placeholder(key)` (`"@@netconf-raw:<key>@@"`), e.g.
  `<bindings>@@netconf-raw:b@@</bindings>`, and stores the children's serialised XML in
  `request.raw[key]` (UTF-8 bytes, each child element with its own `xmlns` declaration, e.g.
  `<binding xmlns="urn:...">...</binding>`; b"" when there are none), either as one bytes object,
  or as a list of bytes parts written out one after the other, never joined, or as any other
  iterable of bytes parts (a generator), which is consumed *while the reply is written*: the
  server produces the first non-blank part at once (to know whether there is content), then
  the rest part by part, each sent before the next is produced, with the event loop running in
  between (the SSH window and the channel's write buffer pace it).  Such a generator must
  tolerate the state changing between parts (walk by key, not with a live iterator), must
  not raise, and keeps memory at a page instead of the whole list;
- that content must already be exactly what the request's filter (subtree or XPath, both in the
  request) selects below the placeholder: the server neither looks inside it nor filters it again;
- the server keeps the placeholder when the filter selects it or names anything below it (a
  containment filter through an empty one drops it, as RFC 6241 §6 omits an empty containment
  match), builds the reply with the placeholder's own start and end tags, and puts the bytes
  between them;
- with-defaults and NACM do not look inside raw content: a provider must not put nodes marked
  `nacm:default-deny-all` there, and reports the leaves it holds as they are (explicit mode);
  a get-data max-depth that cuts below the placeholder drops the raw content.

A placeholder is recognised only in what the provider returned and only for a key present in
`request.raw`; configuration text that looks like a token is never spliced.

RESTCONF replies in JSON (RFC 7951) ask with `StateRequest.json` set; a provider may then store a
:class:`RawJson` instead of the XML parts: the same entries, already in JSON, which RESTCONF sends
without converting them (server/restconf/direct.py).  Only a read of a resource at or inside such a
list asks for it (the reply holds nothing else); the NETCONF layer never does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

RAW_PREFIX = "@@netconf-raw:"
RAW_SUFFIX = "@@"


RawContent = bytes | Iterable[bytes]
"""What a provider stores in `StateRequest.raw`: one bytes object, a list of parts written in order,
or a generator of parts produced while the reply is written."""


@dataclass(frozen=True)
class RawJson:
    """A raw list in RFC 7951 JSON: the entries of the list `name` ((namespace, local name), the only
    children of the placeholder), each one JSON object whose member names are unqualified (the list's
    own module: the provider must not put another module's nodes there), written exactly as libyang
    prints them (members in schema order, keys first, uint64 as strings, empty leaves as [null]),
    separated by commas, without the surrounding brackets.  `parts` as for `StateRequest.raw`: one
    bytes object, a list, or a generator consumed while the reply is written."""

    name: tuple[str, str]
    parts: RawContent


def raw_placeholder(key: str) -> str:
    """The text a provider puts in a placeholder element for `request.raw[key]`."""
    return f"{RAW_PREFIX}{key}{RAW_SUFFIX}"


@dataclass(frozen=True)
class StateRequest:
    """What the client asked for: the raw filter element (subtree) or XPath select with its nsmap.

    `raw` is per call and filled by providers: placeholder key -> serialised children (see the
    module docstring)."""

    subtree: etree._Element | None = None
    xpath: str | None = None
    nsmap: tuple[tuple[str, str], ...] = ()
    with_defaults: str = "explicit"
    raw: dict[str, RawContent | RawJson] = field(default_factory=dict, compare=False)
    #: the reply is RFC 7951 JSON (a RESTCONF read): raw lists may be handed over as RawJson
    json: bool = False


class OperationalProvider(Protocol):
    """Registered with the server for the top-level nodes it owns (`roots`: (namespace, name) pairs).

    `get_state` returns top-level elements shaped like the schema (e.g. a <virtual-routers> holding
    list entries with their keys and only the state leaves); the server merges them with running
    configuration, then applies the filter. The returned elements belong to the server (it moves
    them into the reply): build fresh ones on each call. It must not raise: return [] when nothing
    applies.
    """

    roots: frozenset[tuple[str, str]]

    def get_state(self, request: StateRequest) -> list[etree._Element]: ...

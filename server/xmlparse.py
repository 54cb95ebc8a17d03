"""Hardened XML parsing for everything a client sends.

No entity expansion, no DTD loading, no network, and any DOCTYPE refused outright (XXE and
billion-laughs payloads never reach a tree). `huge_tree` is on because the framer already bounds a
message's size; lxml's own 10 MB text-node limit would otherwise refuse legitimate large edits.
"""

from __future__ import annotations

from lxml import etree

from server.errors import malformed
from server.xmlsafe import new_parser

_PARSER = new_parser(huge_tree=True, collect_ids=False)  # the event loop's thread only


def parse_message(data: bytes) -> etree._Element:
    """Parse one framed message into an element; raise RpcError(malformed-message) on any fault."""
    data = data.lstrip()
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data[:4096]:
        raise malformed("DOCTYPE and entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise malformed(f"XML parse error: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise malformed("DOCTYPE is not accepted")
    return root


def local(tag: object) -> str:
    """Local name of an element tag (Clark notation aware)."""
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def ns_of(tag: object) -> str | None:
    if not isinstance(tag, str) or not tag.startswith("{"):
        return None
    return tag[1 : tag.index("}")]

"""Hardened XML parsing for everything that comes from the network or from disk.

No DTD is loaded, no entity is expanded (XXE, billion laughs), no network access, and a document
that declares a DOCTYPE is refused outright rather than parsed with its entities ignored.  Size is
bounded by the caller (the NETCONF framing layer's maximum message size); libxml2's own limits stay
on (``huge_tree`` off: nesting depth 256, text nodes 10 MB), which no valid document comes near.
"""

from __future__ import annotations

from lxml import etree


class UnsafeXmlError(ValueError):
    """The document is not well-formed or uses a forbidden construct (DTD, entities, depth)."""


def new_parser(*, huge_tree: bool = False, collect_ids: bool = True) -> etree.XMLParser:
    """A fresh hardened parser (lxml parsers are not thread-safe: one per thread or per call).
    `huge_tree` lifts libxml2's size limits for callers that bound the input themselves."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=huge_tree,
        remove_comments=True,
        remove_pis=True,
        collect_ids=collect_ids,
    )


def parse_xml(data: bytes) -> etree._Element:
    """Parse one document; raise :class:`UnsafeXmlError` on anything malformed or unsafe."""
    # XML keywords are case-sensitive: no need to copy a 15 MB request to upper-case it.
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise UnsafeXmlError("DOCTYPE and ENTITY declarations are not accepted")
    try:
        root = etree.fromstring(data, new_parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"malformed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype:
        raise UnsafeXmlError("DOCTYPE declarations are not accepted")
    return root

"""Configuration trees: a forest of top-level elements, each the root of its own lxml document.

Each top-level node owns its document so that absolute XPath (`/mipha:virtual-routers/...`) evaluates
against it directly; the Forest offers the small parent-like interface the edit engine and filters use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator

from lxml import etree

from server.xmlns import NC_NS


def _own_root(el: etree._Element) -> etree._Element:
    if el.getparent() is not None or el.getroottree().getroot() is not el:
        return copy.deepcopy(el)
    return el


def child(el: etree._Element, tag: str) -> etree._Element | None:
    """The first child `tag` of `el`, found by walking from the first child and stopping there:
    lxml's find, findtext and iterchildren(tag) look ahead for the next match, which walks all 100k
    mobile nodes of a virtual router to read its name. (List keys come first in every entry.)"""
    for c in el:
        if c.tag == tag:
            return c
    return None


def child_text(el: etree._Element, tag: str) -> str | None:
    c = child(el, tag)
    return None if c is None else (c.text or "")


class Forest:
    """Ordered top-level data nodes; the parent-like interface mirrors lxml's element API."""

    __slots__ = ("_roots",)

    def __init__(self, roots: Iterable[etree._Element] = ()) -> None:
        self._roots: list[etree._Element] = [_own_root(r) for r in roots]

    def __iter__(self) -> Iterator[etree._Element]:
        return iter(self._roots)

    def __len__(self) -> int:
        return len(self._roots)

    def iterchildren(self, tag: str | None = None) -> Iterator[etree._Element]:
        return iter([r for r in self._roots if tag is None or r.tag == tag])

    def find(self, tag: str) -> etree._Element | None:
        return next((r for r in self._roots if r.tag == tag), None)

    def append(self, el: etree._Element) -> etree._Element:
        el = _own_root(el)
        self._roots.append(el)
        return el

    def insert(self, index: int, el: etree._Element) -> etree._Element:
        el = _own_root(el)
        self._roots.insert(index, el)
        return el

    def remove(self, el: etree._Element) -> None:
        self._roots = [r for r in self._roots if r is not el]

    def index(self, el: etree._Element) -> int:
        for i, r in enumerate(self._roots):
            if r is el:
                return i
        raise ValueError("not a root of this forest")

    def copy(self) -> Forest:
        f = Forest()
        f._roots = [copy.deepcopy(r) for r in self._roots]
        return f

    def clear(self) -> None:
        self._roots = []

    def to_data(self, tag: str = "data", ns: str = NC_NS) -> etree._Element:
        """Deep copies of the roots under one wrapper element (<data> or <config>)."""
        wrapper = etree.Element(f"{{{ns}}}{tag}", nsmap={None: ns})
        for r in self._roots:
            wrapper.append(copy.deepcopy(r))
        return wrapper

    def to_parts(self, tag: str = "data") -> list[bytes]:
        """Serialised as parts written one after the other: the wrapper's tags and each root (a
        reply of 20 MB is never joined into one more copy)."""
        parts = [b'<%s xmlns="%s">' % (tag.encode(), NC_NS.encode())]
        parts.extend(etree.tostring(r) for r in self._roots)
        parts.append(b"</%s>" % tag.encode())
        return parts

    def to_bytes(self, tag: str = "data") -> bytes:
        """Serialise without building a wrapper copy (fast path for big replies and persistence)."""
        return b"".join(self.to_parts(tag))

    @classmethod
    def from_wrapper(cls, wrapper: etree._Element) -> Forest:
        """Children of a <config>/<data> element, each copied into its own document."""
        return cls(copy.deepcopy(c) for c in wrapper if isinstance(c.tag, str))


def view(roots: Iterable[etree._Element]) -> Forest:
    """A Forest sharing (not copying) `roots`: read-only use only (serialising a reply)."""
    f = Forest()
    f._roots = list(roots)
    return f


class LazyForest(Forest):
    """A Forest built on first use by `make()` (a transaction's old tree, which only subscribers
    that still compare whole trees ask for)."""

    __slots__ = ("_got", "_make")

    def __init__(self, make: Callable[[], Forest]) -> None:
        self._make = make
        self._got: list[etree._Element] | None = None

    @property
    def _roots(self) -> list[etree._Element]:
        if self._got is None:
            self._got = list(self._make())
        return self._got

    @_roots.setter
    def _roots(self, roots: list[etree._Element]) -> None:
        self._got = roots

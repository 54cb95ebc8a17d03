"""Raw pre-serialised state (see server/operational.py): placeholders found, kept, then spliced.

Each placeholder a provider returned is renamed to a token carrying a per-request random nonce, so
that configuration text (which a client controls) can never be mistaken for one, and so that the
serialised reply holds each token exactly once at the placeholder's position.  The reply is then cut
at the tokens into parts (the raw contents are never copied into one large byte string: a 50 MB
list of bindings goes out as the provider's own pages); a provider's generator is consumed only
as the reply is written (NetconfSession streams it).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

from lxml import etree

from server.operational import RAW_PREFIX, RAW_SUFFIX, RawContent, RawJson
from server.xmlsafe import new_parser

_FIND = etree.XPath(f"descendant-or-self::*[starts-with(text(), '{RAW_PREFIX}')]")


class _Lazy:
    """Raw parts produced on demand (a provider's generator): the first non-blank part is produced
    at once, so that whether there is any content is known exactly before the reply is shaped."""

    __slots__ = ("head", "rest")

    def __init__(self, parts: Iterator[bytes]) -> None:
        self.head: list[bytes] = []
        for part in parts:
            self.head.append(part)
            if part and not part.isspace():
                break
        self.rest = parts


def _has_content(parts: Iterable[bytes]) -> bool:
    return any(part and not part.isspace() for part in parts)


class RawSplices:
    """The raw contents of one request, keyed by the nonce tokens now in the placeholders."""

    __slots__ = ("_bytes", "_prefix")

    def __init__(self) -> None:
        self._prefix = f"{RAW_PREFIX}{secrets.token_hex(8)}."
        self._bytes: dict[str, list[bytes] | _Lazy] = {}

    @classmethod
    def claim(cls, roots: list[etree._Element], raw: dict[str, RawContent | RawJson]) -> RawSplices:
        """Find the placeholders in the provider-built `roots` whose key is in `raw`; retoken them."""
        out = cls()
        if not raw:
            return out
        for root in roots:
            for el in _FIND(root):
                text = el.text.strip()
                if len(el) or not text.endswith(RAW_SUFFIX):
                    continue
                data = raw.get(text[len(RAW_PREFIX) : -len(RAW_SUFFIX)])
                if data is None or isinstance(data, RawJson):  # JSON is for RESTCONF's direct reads only
                    continue
                token = f"{out._prefix}{len(out._bytes)}{RAW_SUFFIX}"
                if isinstance(data, bytes):
                    out._bytes[token] = [data]
                elif isinstance(data, list | tuple):
                    out._bytes[token] = list(data)
                else:
                    out._bytes[token] = _Lazy(iter(data))
                el.text = token
        return out

    def __bool__(self) -> bool:
        return bool(self._bytes)

    def is_placeholder(self, el: etree._Element) -> bool:
        text = el.text
        return text is not None and text.startswith(self._prefix) and text in self._bytes

    def placeholders(self, root: etree._Element) -> list[etree._Element]:
        """The placeholders in one tree (found in C)."""
        if not self._bytes:
            return []
        return [el for el in _FIND(root) if self.is_placeholder(el)]

    def has_content(self, el: etree._Element) -> bool:
        parts = self._bytes[el.text]
        return _has_content(parts.head if isinstance(parts, _Lazy) else parts)

    def drop_content(self, el: etree._Element) -> None:
        """max-depth cut below the placeholder: it stays, empty."""
        self._bytes[el.text] = []

    def materialize(self, el: etree._Element) -> None:
        """Parse the raw content into child elements of its placeholder (NACM must look inside it)."""
        parts = self._bytes.pop(el.text)
        data = b"".join([*parts.head, *parts.rest] if isinstance(parts, _Lazy) else parts)
        el.text = None
        el.extend(etree.fromstring(b"<raw>" + data + b"</raw>", new_parser(huge_tree=True)))

    def splice(self, body: bytes) -> list[bytes] | Iterator[bytes]:
        """`body` cut at each token (present once, if its placeholder survived), the token's raw parts
        in its place: the reply as parts to be written one after the other.  A list when every part
        exists; a generator when a provider's parts are produced as they are written."""
        found = sorted((at, token) for token in self._bytes if (at := body.find(token.encode())) >= 0)
        if not found:
            return [body]
        segments: list[bytes | _Lazy] = []
        start = 0
        for at, token in found:
            segments.append(body[start:at])
            content = self._bytes[token]
            if isinstance(content, _Lazy):
                segments.append(content)
            else:
                segments.extend(content)
            start = at + len(token)
        segments.append(body[start:])
        if any(isinstance(segment, _Lazy) for segment in segments):
            return _produce(segments)
        return [segment for segment in segments if isinstance(segment, bytes) and segment]


def _produce(segments: list[bytes | _Lazy]) -> Iterator[bytes]:
    for segment in segments:
        if isinstance(segment, _Lazy):
            yield from segment.head
            yield from segment.rest
        elif segment:
            yield segment


NO_SPLICES = RawSplices()

"""Raw pre-serialised state (see server/operational.py): placeholders found, kept, then spliced.

Each placeholder a provider returned is renamed to a token carrying a per-request random nonce, so
that configuration text (which a client controls) can never be mistaken for one, and so that the
serialised reply holds each token exactly once at the placeholder's position.  The reply is then cut
at the tokens into parts (the raw contents are never copied into one large byte string: a 50 MB
list of bindings goes out as the provider's own pages, see ``Framer.frame_parts``).
"""

from __future__ import annotations

import secrets

from lxml import etree

from server.operational import RAW_PREFIX, RAW_SUFFIX, RawContent

_FIND = etree.XPath(f"descendant-or-self::*[starts-with(text(), '{RAW_PREFIX}')]")


class RawSplices:
    """The raw contents of one request, keyed by the nonce tokens now in the placeholders."""

    __slots__ = ("_bytes", "_prefix")

    def __init__(self) -> None:
        self._prefix = f"{RAW_PREFIX}{secrets.token_hex(8)}."
        self._bytes: dict[str, list[bytes]] = {}

    @classmethod
    def claim(cls, roots: list[etree._Element], raw: dict[str, RawContent]) -> RawSplices:
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
                if data is None:
                    continue
                token = f"{out._prefix}{len(out._bytes)}{RAW_SUFFIX}"
                out._bytes[token] = [data] if isinstance(data, bytes) else list(data)
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
        return any(part and not part.isspace() for part in self._bytes[el.text])

    def drop_content(self, el: etree._Element) -> None:
        """max-depth cut below the placeholder: it stays, empty."""
        self._bytes[el.text] = []

    def splice(self, body: bytes) -> list[bytes]:
        """`body` cut at each token (present once, if its placeholder survived), the token's raw parts
        in its place: the reply as parts to be written one after the other."""
        found = sorted((at, token) for token in self._bytes if (at := body.find(token.encode())) >= 0)
        if not found:
            return [body]
        parts: list[bytes] = []
        start = 0
        for at, token in found:
            parts.append(body[start:at])
            parts.extend(self._bytes[token])
            start = at + len(token)
        parts.append(body[start:])
        return [part for part in parts if part]


NO_SPLICES = RawSplices()

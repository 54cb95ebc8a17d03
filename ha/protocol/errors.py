"""The one error type of the protocol package, modelled on h11's ``LocalProtocolError``.

Everything that goes wrong while reading bytes raises :class:`ProtocolError`.  The caller (the engine's
UDP shell) never has to interpret the message text: ``reply_code_hint`` says which Registration Reply
code to send, and ``None`` means "silently discard" (RFC 5944 §1.9: an unknown non-skippable extension;
a datagram too short to answer; a message that is not a request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import ReplyCode

if TYPE_CHECKING:
    from .messages import RegistrationRequest


class ProtocolError(Exception):
    """A message could not be accepted as it is on the wire.

    ``header`` is the request's fixed part (no extensions) when it could be read, which is all a
    reply needs; it is ``None`` whenever ``reply_code_hint`` is ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        reply_code_hint: ReplyCode | None = None,
        header: RegistrationRequest | None = None,
    ) -> None:
        super().__init__(message)
        self.reply_code_hint = reply_code_hint
        self.header = header if reply_code_hint is not None else None

    @property
    def discard(self) -> bool:
        """True when RFC 5944 says to drop the datagram without any reply."""
        return self.reply_code_hint is None or self.header is None

"""The engine's one error type for refused configuration, shaped for a NETCONF ``<rpc-error>``."""

from __future__ import annotations


class ConfigRefused(Exception):
    """``prepare`` refused a configuration change.

    ``path`` is the YANG instance path of the offending node (what ``<error-path>`` carries), and
    ``app_tag`` an optional ``<error-app-tag>``; the message is fit for ``<error-message>``.
    """

    def __init__(self, message: str, *, path: str, app_tag: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.app_tag = app_tag

    def __repr__(self) -> str:
        return f"ConfigRefused({self.message!r}, path={self.path!r})"

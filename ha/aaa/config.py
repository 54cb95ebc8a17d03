"""Typed ``virtual-router/aaa`` configuration (YANG names in snake case, YANG defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address


class Authentication(StrEnum):
    """``home-agent/authentication``: where mobile nodes' security associations come from."""

    LOCAL = "local"  # configured mobile nodes only
    AAA = "aaa"  # every node through RADIUS
    LOCAL_THEN_AAA = "local-then-aaa"  # configured nodes locally, any other NAI through RADIUS


@dataclass(frozen=True, slots=True)
class AaaServer:
    """One RADIUS server (``aaa/server``), tried in configuration order."""

    address: IPv4Address
    secret: bytes = field(repr=False)
    auth_port: int = 1812
    acct_port: int = 1813

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", IPv4Address(self.address))
        if not self.secret:
            raise ValueError("a RADIUS secret must not be empty")


@dataclass(frozen=True, slots=True)
class AaaConfig:
    """``virtual-router/aaa``."""

    servers: tuple[AaaServer, ...] = ()
    lookup_password: bytes = field(default=b"", repr=False)
    timeout_ms: int = 2000
    retries: int = 2
    accounting: bool = True
    cache_size: int = 100_000
    max_pending: int = 4096
    disconnect_port: int = 3799

    def __post_init__(self) -> None:
        object.__setattr__(self, "servers", tuple(self.servers))
        if self.timeout_ms <= 0 or self.retries < 0:
            raise ValueError("timeout must be positive and retries not negative")

"""Past-tense facts the engine reports (``next_event()``); they feed the YANG notifications.

Frozen, like h11's events: safe to queue, compare in tests and hand to another task.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address


class RemovalReason(StrEnum):
    """Why a binding went away (YANG ``binding-removed/reason``)."""

    DEREGISTERED = "deregistered"
    EXPIRED = "expired"
    CLEARED = "cleared"
    REPLACED = "replaced"
    REVOKED = "revoked"  # the foreign agent revoked it (RFC 3543 Registration Revocation)
    DATA_PLANE_FAILURE = "data-plane-failure"  # the data plane could not program it; withdrawn


@dataclass(frozen=True, slots=True)
class BindingCreated:
    """A new ``(home_address, care_of_address)`` binding exists (refreshes do not emit this)."""

    home_address: IPv4Address
    care_of_address: IPv4Address
    mobile_node: str
    nai: str | None
    lifetime: int


@dataclass(frozen=True, slots=True)
class BindingRemoved:
    """A binding is gone, and why."""

    home_address: IPv4Address
    care_of_address: IPv4Address
    mobile_node: str
    reason: RemovalReason
    nai: str | None = None


@dataclass(frozen=True, slots=True)
class RegistrationDenied:
    """A request was answered with a denial code (128-255)."""

    code: int
    peer: IPv4Address
    spi: int | None
    home_address: IPv4Address | None = None


Event = BindingCreated | BindingRemoved | RegistrationDenied

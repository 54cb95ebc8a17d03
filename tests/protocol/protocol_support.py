"""Builders shared by the ha.protocol tests (a uniquely named module, importable from every test file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ha.protocol import (
    ExtensionType,
    ForeignHomeAuth,
    MobileHomeAuth,
    RegistrationRequest,
    RequestFlags,
    SecurityAssociation,
    pull_registration_request,
    push_registration_request,
)
from ha.protocol.replay import ntp_timestamp

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
FA_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
HA = IPv4Address("10.0.0.1")
HOA = IPv4Address("10.0.0.5")
COA = IPv4Address("192.0.2.10")
FA = IPv4Address("192.0.2.1")
#: A fixed wall clock (2026-11-27T08:00:00Z) and monotonic clock for the decision tests.
WALLCLOCK = 1_795_680_000.0
NOW = 5_000.0


@dataclass
class Registration:
    """Builds signed requests the way a mobile node (and optionally a foreign agent) would."""

    sa: SecurityAssociation = field(default_factory=lambda: SecurityAssociation(256, KEY))
    fa_sa: SecurityAssociation | None = None

    def request(
        self,
        *,
        flags: RequestFlags = RequestFlags.NONE,
        lifetime: int = 1800,
        home_address: IPv4Address = HOA,
        home_agent: IPv4Address = HA,
        care_of_address: IPv4Address = COA,
        identification: int | None = None,
        before: tuple = (),
        after: tuple = (),
        fa_extensions: tuple = (),
        sign: bool = True,
        sa: SecurityAssociation | None = None,
        mn_auth: bool = True,
    ) -> RegistrationRequest:
        """Encode, sign and re-parse a request, so ``raw`` and offsets are those of real bytes."""
        sa = sa or self.sa
        ident = ntp_timestamp(WALLCLOCK) if identification is None else identification
        mn_ha = (MobileHomeAuth(sa.spi, b"" if sign else bytes(16)),) if mn_auth else ()
        extensions = (*before, *mn_ha, *after, *fa_extensions)
        signers = {ExtensionType.MN_HA_AUTH: sa} if sign else {}
        if self.fa_sa is not None:
            extensions = (*extensions, ForeignHomeAuth(self.fa_sa.spi))
            signers[ExtensionType.FA_HA_AUTH] = self.fa_sa
        request = RegistrationRequest(
            flags, lifetime, home_address, home_agent, care_of_address, ident, extensions
        )
        return pull_registration_request(push_registration_request(request, sign=signers))

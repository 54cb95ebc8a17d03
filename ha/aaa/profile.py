"""What an Access-Accept grants a mobile node, and what the home agent learns to keep (sans-I/O).

The security association comes from the Juniper set (ERX-Mobile-IP-SPI 26-4874-85, -Key -86,
-Algorithm -84, -Lifetime -89; FreeRADIUS ``dictionary.erx``) or, when that set is absent, from the
3GPP2 pair (3GPP2-MN-HA-SPI 26-5535-57 and 3GPP2-MN-HA-Shared-Key -58, salt-encrypted per RFC 2868 §3.5).
The home address comes from Framed-IP-Address, or from the virtual router's ``address-pool`` that
Framed-Pool names.  An ERX lifetime caps the granted lifetime.

ERX-Mobile-IP-Algorithm has no VALUE names in the dictionaries: mipha reads 1 as HMAC-MD5 (RFC 5944's
default, also when the attribute is absent) and 2 as keyed-MD5 prefix+suffix (RFC 2002).  The ERX key
is taken as the octets of the string (the users file quotes it).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from ipaddress import IPv4Address

from ha.protocol.auth import MIN_KEY_LENGTH, SecurityAssociation
from ha.protocol.constants import AuthAlgorithm

from . import radius
from .radius import Attr, Packet

ERX_ALGORITHMS = {1: AuthAlgorithm.HMAC_MD5, 2: AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX}
KEY_SOURCES = ("erx", "3gpp2")
ADDRESS_SOURCES = ("framed-ip-address", "framed-pool")


class AnswerUnusable(ValueError):
    """An Access-Accept that does not give what a registration needs (the message says what)."""


@dataclass(frozen=True, slots=True)
class AaaProfile:
    """A subscriber as RADIUS described it; kept in the cache and the binding journal."""

    nai: str
    spi: int
    key: bytes
    algorithm: AuthAlgorithm
    home_address: IPv4Address | None
    pool: str | None
    lifetime: int | None  # ERX-Mobile-IP-Lifetime: a ceiling on the granted lifetime
    key_source: str  # one of KEY_SOURCES
    address_source: str  # one of ADDRESS_SOURCES

    def security_association(self) -> SecurityAssociation:
        return SecurityAssociation(self.spi, self.key, self.algorithm)

    def to_dict(self) -> dict:
        return {
            "nai": self.nai,
            "spi": self.spi,
            "key": self.key.hex(),
            "algorithm": str(self.algorithm),
            "home_address": None if self.home_address is None else str(self.home_address),
            "pool": self.pool,
            "lifetime": self.lifetime,
            "key_source": self.key_source,
            "address_source": self.address_source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> AaaProfile:
        home = d.get("home_address")
        return cls(
            nai=str(d["nai"]),
            spi=int(d["spi"]),
            key=bytes.fromhex(d["key"]),
            algorithm=AuthAlgorithm(d["algorithm"]),
            home_address=IPv4Address(home) if home else None,
            pool=d.get("pool"),
            lifetime=d.get("lifetime"),
            key_source=str(d["key_source"]),
            address_source=str(d["address_source"]),
        )


def _integer(value: bytes, name: str) -> int:
    if len(value) != 4:
        raise AnswerUnusable(f"{name} is not a 4-octet integer")
    return int.from_bytes(value, "big")


def profile_from_accept(
    packet: Packet, *, nai: str, secret: bytes, request_authenticator: bytes, pools: Container[str]
) -> AaaProfile:
    """Read an Access-Accept (already authenticated); AnswerUnusable when it lacks a key or address."""
    erx = dict(packet.vendor(radius.VENDOR_JUNIPER_ERX))
    tgpp2 = dict(packet.vendor(radius.VENDOR_3GPP2))
    lifetime = None
    if radius.ERX_MOBILE_IP_LIFETIME in erx:
        lifetime = _integer(erx[radius.ERX_MOBILE_IP_LIFETIME], "ERX-Mobile-IP-Lifetime")
        if lifetime == 0:
            raise AnswerUnusable("ERX-Mobile-IP-Lifetime is 0")
        lifetime = min(lifetime, 0xFFFF)
    if radius.ERX_MOBILE_IP_SPI in erx or radius.ERX_MOBILE_IP_KEY in erx:
        if radius.ERX_MOBILE_IP_SPI not in erx or radius.ERX_MOBILE_IP_KEY not in erx:
            raise AnswerUnusable("ERX-Mobile-IP-SPI and ERX-Mobile-IP-Key come together")
        spi = _integer(erx[radius.ERX_MOBILE_IP_SPI], "ERX-Mobile-IP-SPI")
        key = erx[radius.ERX_MOBILE_IP_KEY]
        code = 1
        if radius.ERX_MOBILE_IP_ALGORITHM in erx:
            code = _integer(erx[radius.ERX_MOBILE_IP_ALGORITHM], "ERX-Mobile-IP-Algorithm")
        if code not in ERX_ALGORITHMS:
            raise AnswerUnusable(f"ERX-Mobile-IP-Algorithm {code} is not 1 (hmac-md5) or 2 (keyed-md5)")
        algorithm, key_source = ERX_ALGORITHMS[code], "erx"
    elif radius.TGPP2_MN_HA_SPI in tgpp2 and radius.TGPP2_MN_HA_SHARED_KEY in tgpp2:
        spi = _integer(tgpp2[radius.TGPP2_MN_HA_SPI], "3GPP2-MN-HA-SPI")
        try:
            key = radius.decrypt_salted(tgpp2[radius.TGPP2_MN_HA_SHARED_KEY], secret, request_authenticator)
        except radius.RadiusError as exc:
            raise AnswerUnusable(f"3GPP2-MN-HA-Shared-Key: {exc}") from None
        algorithm, key_source = AuthAlgorithm.HMAC_MD5, "3gpp2"
    else:
        raise AnswerUnusable("no MN-HA security association (ERX-Mobile-IP-SPI/Key or 3GPP2-MN-HA-SPI/Key)")
    if spi < 256:
        raise AnswerUnusable(f"SPI {spi} is reserved (0-255)")
    if len(key) < MIN_KEY_LENGTH:
        raise AnswerUnusable(f"the MN-HA key is {len(key)} octets; at least {MIN_KEY_LENGTH} are needed")
    framed = packet.get(Attr.FRAMED_IP_ADDRESS)
    pool_name = packet.get(Attr.FRAMED_POOL)
    home = pool = None
    if framed is not None:
        if len(framed) != 4:
            raise AnswerUnusable("Framed-IP-Address is not 4 octets")
        home = IPv4Address(framed)
        if home.is_unspecified or home.is_multicast or int(home) == 0xFFFFFFFF:
            raise AnswerUnusable(f"Framed-IP-Address {home} is not a unicast address")
        address_source = "framed-ip-address"
    elif pool_name is not None:
        pool = pool_name.decode("utf-8", "replace")
        if pool not in pools:
            raise AnswerUnusable(f"Framed-Pool {pool!r} is not an address-pool of this virtual router")
        address_source = "framed-pool"
    else:
        raise AnswerUnusable("no home address (Framed-IP-Address or Framed-Pool)")
    return AaaProfile(nai, spi, key, algorithm, home, pool, lifetime, key_source, address_source)

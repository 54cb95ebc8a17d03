"""IPv4 / ICMP / UDP packet building and checking for the lab tests (no scapy: exact bytes, fast)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: IPv4Address, dst: IPv4Address, proto: int, payload: bytes, *, ttl: int = 64) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl, proto, 0, src.packed, dst.packed
    )
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def echo_request(src: IPv4Address, dst: IPv4Address, ident: int, seq: int, data: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    return ipv4(src, dst, 1, icmp)


def udp(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, data: bytes) -> bytes:
    length = 8 + len(data)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, length)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo + hdr + data) or 0xFFFF
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, length, csum) + data)


def udp_checksum_ok(packet: bytes) -> bool:
    """True when the UDP datagram inside ``packet`` (an IPv4 packet) carries a correct checksum."""
    ihl = (packet[0] & 0x0F) * 4
    segment = packet[ihl:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(segment))
    return checksum(pseudo + segment) == 0


def split(packet: bytes) -> tuple[bytes, bytes]:
    """(outer header, inner packet) of an IP-in-IP packet as a raw socket returns it."""
    ihl = (packet[0] & 0x0F) * 4
    return packet[:ihl], packet[ihl:]

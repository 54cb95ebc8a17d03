"""The RFC 1071 Internet checksum, for the IP and ICMP headers the userspace data paths write."""

from __future__ import annotations

import struct


def internet_checksum(data: bytes | bytearray) -> int:
    """The RFC 1071 Internet checksum of ``data`` (IP headers, ICMP)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

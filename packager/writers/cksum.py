"""POSIX ``cksum`` CRC (what a BOM records per file), fast enough for gigabyte payloads.

cksum is CRC-32 with polynomial 0x04C11DB7 processed MSB-first, the data length appended and
the result complemented. zlib only offers the bit-reflected CRC-32 of the same polynomial; a
CRC over bit-reversed bytes is the bit-reversal of the unreflected CRC, so feeding zlib the
bytes with their bits reversed (bytes.translate, C speed) gives cksum without a Python loop.
"""

from __future__ import annotations

import zlib

_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


class Cksum:
    """Incremental POSIX cksum: ``update()`` chunks, then ``value()``."""

    def __init__(self) -> None:
        self._crc = 0xFFFFFFFF  # zlib's register starts at start ^ 0xFFFFFFFF == 0, as cksum's
        self.length = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data.translate(_REVERSE), self._crc)
        self.length += len(data)

    def value(self) -> int:
        tail = bytearray()
        n = self.length
        while n:
            tail.append(n & 0xFF)
            n >>= 8
        crc = zlib.crc32(bytes(tail).translate(_REVERSE), self._crc)
        register = _reverse32(crc ^ 0xFFFFFFFF)
        return ~register & 0xFFFFFFFF

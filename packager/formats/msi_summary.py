"""Normalise an MSI's SummaryInformation so identical inputs give identical bytes.

wixl stamps a random PackageCode (PID_REVNUMBER) and the current time (PID_CREATE_DTM,
PID_LASTSAVE_DTM, PID_LASTPRINTED) into the ``\\x05SummaryInformation`` property set
(MS-OLEPS). No library writes MSI summary properties, so the few fixed-size values are patched
in place here and the stream written back with olefile (same length, so the compound file
layout is unchanged).
"""

from __future__ import annotations

import struct
from pathlib import Path

import olefile

STREAM = "\x05SummaryInformation"
PID_REVNUMBER = 9
PID_LASTPRINTED = 11
PID_CREATE_DTM = 12
PID_LASTSAVE_DTM = 13
VT_LPSTR = 0x1E
VT_FILETIME = 0x40
_EPOCH_AS_FILETIME = 116444736000000000  # 1970-01-01 in 100 ns ticks since 1601-01-01


def _offsets(data: bytes) -> dict[int, int]:
    """Property id -> absolute offset of its typed value, in the first property set."""
    (set_offset,) = struct.unpack_from("<I", data, 28 + 16)
    _size, count = struct.unpack_from("<II", data, set_offset)
    out = {}
    for i in range(count):
        pid, offset = struct.unpack_from("<II", data, set_offset + 8 + 8 * i)
        out[pid] = set_offset + offset
    return out


def normalise_summary(msi: Path, *, package_code: str, timestamp: int | None) -> None:
    ole = olefile.OleFileIO(str(msi), write_mode=True)
    try:
        data = bytearray(ole.openstream(STREAM).read())
        offsets = _offsets(bytes(data))
        at = offsets[PID_REVNUMBER]
        vtype, length = struct.unpack_from("<II", data, at)
        code = package_code.encode("ascii") + b"\0"
        if vtype != VT_LPSTR or length != len(code):
            raise ValueError("unexpected PackageCode property in SummaryInformation")
        data[at + 8 : at + 8 + len(code)] = code
        if timestamp is not None:
            ticks = _EPOCH_AS_FILETIME + timestamp * 10_000_000
            for pid in (PID_LASTPRINTED, PID_CREATE_DTM, PID_LASTSAVE_DTM):
                if pid in offsets:
                    at = offsets[pid]
                    (vtype,) = struct.unpack_from("<I", data, at)
                    if vtype == VT_FILETIME:
                        struct.pack_into("<Q", data, at + 4, ticks)
        ole.write_stream(STREAM, bytes(data))
    finally:
        ole.close()

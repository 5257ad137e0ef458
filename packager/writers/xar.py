"""A writer for xar archives, the container of macOS flat packages (``.pkg``).

No Linux tool or PyPI library writes xar reproducibly (bsdtar stamps creation-time, inode and
device numbers into the TOC), so the format is written here: a 28-byte big-endian header, a
zlib-compressed XML table of contents, then the heap, whose first 20 bytes are the SHA-1 of
the compressed TOC (Apple's tools and signers expect SHA-1 there), followed by the members'
bytes. Members are stored uncompressed (octet-stream), so archived and extracted checksums are
the same SHA-1, computed while the member is copied when not given.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

HEADER = struct.Struct(">4sHHQQI")
CKSUM_SHA1 = 1
CHUNK = 1024 * 1024


@dataclass
class XarMember:
    """A file (``source``) or directory (``source`` None) at ``path`` inside the archive."""

    path: str
    source: Path | None = None
    mode: int = 0o644
    sha1: str | None = None  # known digest of ``source`` (saves a read), else computed
    size: int | None = None
    children: list[XarMember] = field(default_factory=list)


def _sha1_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha1(), 0  # noqa: S324 - the xar format's checksum, not security
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _tree(members: list[XarMember]) -> list[XarMember]:
    """Nest flat ``a/b/c`` members under their directories (made implicitly when missing)."""
    nodes: dict[str, XarMember] = {}
    top: list[XarMember] = []

    def attach(node: XarMember) -> None:
        parent = node.path.rpartition("/")[0]
        if not parent:
            top.append(node)
            return
        if parent not in nodes:
            nodes[parent] = XarMember(parent, None, 0o755)
            attach(nodes[parent])
        nodes[parent].children.append(node)

    for member in sorted(members, key=lambda m: m.path):
        if member.path in nodes:  # an implicit directory made earlier: keep the given mode
            nodes[member.path].mode = member.mode
            continue
        nodes[member.path] = member
        attach(member)
    for node in nodes.values():
        node.children.sort(key=lambda m: m.path)
    return sorted(top, key=lambda m: m.path)


def write_xar(out: Path, members: list[XarMember], *, timestamp: int | None = None) -> None:
    """Write ``members`` (files and directories by archive path) as a xar archive to ``out``.

    ``timestamp`` (SOURCE_DATE_EPOCH) is the TOC's creation-time (default: now); Apple's
    readers require the element.
    """
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, timezone.utc)
    creation_time = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    ordered: list[XarMember] = []  # files in heap order
    toc = ET.Element("toc")
    checksum = ET.SubElement(toc, "checksum", style="sha1")
    ET.SubElement(checksum, "offset").text = "0"
    ET.SubElement(checksum, "size").text = "20"
    ET.SubElement(toc, "creation-time").text = creation_time
    next_id = 0
    heap_offset = 20

    def add(parent: ET.Element, member: XarMember) -> None:
        nonlocal next_id, heap_offset
        next_id += 1
        element = ET.SubElement(parent, "file", id=str(next_id))
        ET.SubElement(element, "name").text = member.path.rsplit("/", 1)[-1]
        is_dir = member.source is None
        ET.SubElement(element, "type").text = "directory" if is_dir else "file"
        ET.SubElement(element, "mode").text = f"0{member.mode:o}"
        ET.SubElement(element, "uid").text = "0"
        ET.SubElement(element, "user").text = "root"
        ET.SubElement(element, "gid").text = "80"
        ET.SubElement(element, "group").text = "admin"
        if member.source is not None:
            if member.sha1 is None or member.size is None:
                member.sha1, member.size = _sha1_and_size(member.source)
            data = ET.SubElement(element, "data")
            ET.SubElement(data, "length").text = str(member.size)
            ET.SubElement(data, "offset").text = str(heap_offset)
            ET.SubElement(data, "size").text = str(member.size)
            ET.SubElement(data, "encoding", style="application/octet-stream")
            ET.SubElement(data, "archived-checksum", style="sha1").text = member.sha1
            ET.SubElement(data, "extracted-checksum", style="sha1").text = member.sha1
            heap_offset += member.size
            ordered.append(member)
        for child in member.children:
            add(element, child)

    for root in _tree(members):
        add(toc, root)
    xar = ET.Element("xar")
    xar.append(toc)
    ET.indent(xar, space=" ")
    text = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(xar, encoding="utf-8") + b"\n"
    compressed = zlib.compress(text, 9)
    toc_sha1 = hashlib.sha1(compressed).digest()  # noqa: S324 - format-mandated checksum
    with out.open("wb") as f:
        f.write(HEADER.pack(b"xar!", HEADER.size, 1, len(compressed), len(text), CKSUM_SHA1))
        f.write(compressed)
        f.write(toc_sha1)
        for member in ordered:
            with Path(str(member.source)).open("rb") as src:
                shutil.copyfileobj(src, f, CHUNK)

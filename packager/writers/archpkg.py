"""Finish an nfpm Arch Linux package: drop the directory entries the package must not own.

pacman records every member of a package as owned by it and, on removal, deletes each owned
directory that is empty and owned by no other package. nfpm lists every parent directory
(``opt/``, ``usr/local/bin/``, ``etc/default/``), so on a system where the ``filesystem`` package
does not own them (Debian with pacman, minimal images) removing our package deleted ``/opt``
and ``/usr/local/bin``. This copies nfpm's ``.pkg.tar.zst`` with only the directories we own,
in the archive and in its ``.MTREE`` (the manifest ``pacman -Qkk`` checks), recompressing in
one streamed pass. pacman creates missing parents when it extracts (libarchive's default).

nfpm also writes the ``.INSTALL`` functions as ``function post_install() {``, which only bash
parses; pacman runs scriptlets with its build's shell, bash on Arch but ``/bin/sh`` (dash) on
Debian's pacman, where every scriptlet failed. The POSIX form ``post_install() {`` means the same
to bash, so the copy uses it.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from pathlib import Path

from packager.writers.tarblocks import (
    BLOCK,
    TarFormatError,
    copy_through,
    emit,
    read_exact,
    skip,
    tar_records,
    tar_size,
    with_size,
    zstd_compressor,
)

MTREE = "/.MTREE"
INSTALL = "/.INSTALL"
METADATA_LIMIT = 16 * 1024 * 1024  # the manifest and scripts of our layout are a few kB
_BASH_FUNCTION = re.compile(rb"^function ([A-Za-z_][A-Za-z0-9_]*)\(\) \{$", re.M)


def posix_install(data: bytes) -> bytes:
    """``.INSTALL`` with POSIX function definitions (``name() {``) instead of bash's."""
    return _BASH_FUNCTION.sub(rb"\1() {", data)


def filter_mtree(data: bytes, owned_dirs: frozenset[str]) -> tuple[bytes, list[str]]:
    """The gzip'd mtree ``data`` without its ``type=dir`` lines outside ``owned_dirs``."""
    text = gzip.decompress(data).decode("utf-8")
    kept, dropped = [], []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if fields and fields[0].startswith("./") and "type=dir" in fields[1:]:
            path = "/" + fields[0].removeprefix("./").strip("/")
            if path not in owned_dirs:
                dropped.append(path)
                continue
        kept.append(line)
    # mtime 0 and no file name in the gzip header: the bytes depend only on the content.
    return gzip.compress("".join(kept).encode("utf-8"), mtime=0), dropped


def finish_archpkg(source: Path, output: Path, *, owned_dirs: frozenset[str]) -> list[str]:
    """Copy nfpm's package ``source`` to ``output`` keeping only the directory entries in
    ``owned_dirs`` (absolute paths). Returns the directories dropped."""
    import zstandard  # lazy: only Arch packages need it

    dropped: list[str] = []
    mtree_dropped: list[str] | None = None

    def mtree(data: bytes) -> bytes:
        nonlocal mtree_dropped
        out, mtree_dropped = filter_mtree(data, owned_dirs)
        return out

    rewrite: dict[str, Callable[[bytes], bytes]] = {MTREE: mtree, INSTALL: posix_install}
    compressor = zstd_compressor()
    with open(source, "rb") as raw, open(output, "wb") as out:
        src = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        for blocks, path, typeflag, stream, length in tar_records(src, 2**63):
            if typeflag == b"5" and path not in owned_dirs:
                dropped.append(path)
                skip(stream, length)
            elif path in rewrite:
                if len(blocks) != BLOCK or length > METADATA_LIMIT:
                    raise TarFormatError(f"{path} is not a plain tar member")
                data = rewrite[path](read_exact(stream, length)[: tar_size(blocks)])
                padding = b"\0" * (-len(data) % BLOCK)
                emit(out, compressor, with_size(blocks, len(data)) + data + padding)
            else:
                emit(out, compressor, blocks)
                copy_through(stream, out, compressor, length)
        emit(out, compressor, b"\0" * (2 * BLOCK))
        out.write(compressor.flush())
    if mtree_dropped is None or sorted(mtree_dropped) != sorted(dropped):
        raise TarFormatError(".MTREE and the archive disagree on the directories")
    return dropped

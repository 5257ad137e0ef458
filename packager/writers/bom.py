"""A writer for BOM ("bill of materials") files, the ``Bom`` of a macOS flat package.

Neither Debian nor PyPI has a BOM writer (bomutils' mkbom is unpackaged and unmaintained), so
the format is written here from its documented structure (bomutils' bom.h, Fleet's bom.go):
a big-endian "BOMStore" container of numbered blocks and named variables, whose ``Paths``
variable is a B-tree listing every path with type, mode, owner, size and POSIX cksum -- what
``lsbom`` prints. Paths get IDs breadth-first with siblings sorted by name, so leaves are
ordered by (parent ID, name); leaves hold at most 256 paths and hang off one branch node,
linked forward and backward, as Apple's and bomutils' trees are.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterable
from pathlib import Path

from packager.writers.cpio import ADMIN_GID, TreeEntry

HEADER_SIZE = 512
LEAF_CAPACITY = 256
TYPE = {"file": 1, "dir": 2, "symlink": 3}
S_IF = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


class _Blocks:
    """Numbered blocks; block 0 is the null entry every BOM starts its table with."""

    def __init__(self) -> None:
        self.data: list[bytes] = [b""]

    def add(self, payload: bytes) -> int:
        self.data.append(payload)
        return len(self.data) - 1


def _tree(child: int, path_count: int, block_size: int = 4096) -> bytes:
    return b"tree" + struct.pack(">IIIIB", 1, child, block_size, path_count, 0)


def _paths_node(is_leaf: bool, pairs: list[tuple[int, int]], forward: int, backward: int) -> bytes:
    head = struct.pack(">HHII", 1 if is_leaf else 0, len(pairs), forward, backward)
    return head + b"".join(struct.pack(">II", a, b) for a, b in pairs)


def _path_info2(entry: TreeEntry, uid: int, gid: int, mtime: int) -> bytes:
    link = entry.link.encode("utf-8") + b"\0" if entry.kind == "symlink" else b""
    return (
        struct.pack(
            ">BBHHIIIIBII",
            TYPE[entry.kind],
            1,
            3,  # "architecture": what mkbom and Apple write
            S_IF[entry.kind] | entry.mode,
            uid,
            gid,
            mtime,
            entry.size if entry.kind != "dir" else 0,
            1,
            entry.cksum if entry.kind != "dir" else 0,
            len(link),
        )
        + link
    )


def write_bom(
    entries: Iterable[TreeEntry], out: Path, *, uid: int = 0, gid: int = ADMIN_GID
) -> None:
    """Write the BOM of ``entries`` (names "." and "./a/b", as the cpio writer returns them)."""
    by_name = {e.name: e for e in entries}
    if "." not in by_name:
        raise ValueError("a BOM needs the root entry '.'")
    children: dict[str, list[str]] = {name: [] for name in by_name}
    for name in by_name:
        if name != ".":
            parent = name.rsplit("/", 1)[0]
            if parent not in children:
                raise ValueError(f"{name}: parent {parent} is not in the tree")
            children[parent].append(name)

    # Breadth-first IDs: "." is 1 with parent 0; siblings in name order.
    order: list[tuple[int, int, str]] = []  # (id, parent id, full name)
    queue = [(0, ".")]
    ids: dict[str, int] = {}
    order.append((1, 0, "."))
    ids["."] = 1
    while queue:
        _parent_id, name = queue.pop(0)
        for child in sorted(children[name], key=lambda n: n.rsplit("/", 1)[1]):
            ids[child] = len(ids) + 1
            order.append((ids[child], ids[name], child))
        queue.extend(
            (ids[name], c) for c in sorted(children[name], key=lambda n: n.rsplit("/", 1)[1])
        )

    blocks = _Blocks()
    variables: list[tuple[str, int]] = []
    count = len(order)
    info = struct.pack(">III", 1, count + 1, 1) + bytes(16)
    variables.append(("BomInfo", blocks.add(info)))

    # Paths: per path a PathInfo2, a PathInfo1 (id -> PathInfo2) and a File (parent, name).
    pairs: list[tuple[int, int]] = []
    for path_id, parent_id, name in order:
        entry = by_name[name]
        info2 = blocks.add(_path_info2(entry, uid, gid, entry.mtime))
        info1 = blocks.add(struct.pack(">II", path_id, info2))
        short = "." if name == "." else name.rsplit("/", 1)[1]
        file_block = blocks.add(struct.pack(">I", parent_id) + short.encode("utf-8") + b"\0")
        pairs.append((info1, file_block))
    leaves = [pairs[i : i + LEAF_CAPACITY] for i in range(0, len(pairs), LEAF_CAPACITY)]
    if len(leaves) == 1:
        root_node = blocks.add(_paths_node(True, leaves[0], 0, 0))
    else:
        # Reserve leaf block numbers first so each leaf can point at its neighbours.
        leaf_ids = [blocks.add(b"") for _ in leaves]
        for i, leaf in enumerate(leaves):
            forward = leaf_ids[i + 1] if i + 1 < len(leaf_ids) else 0
            backward = leaf_ids[i - 1] if i > 0 else 0
            blocks.data[leaf_ids[i]] = _paths_node(True, leaf, forward, backward)
        # Branch: (leaf, File block of the leaf's last path) per leaf.
        branch = [(leaf_ids[i], leaf[-1][1]) for i, leaf in enumerate(leaves)]
        root_node = blocks.add(_paths_node(False, branch, 0, 0))
    variables.append(("Paths", blocks.add(_tree(root_node, count))))

    empty_leaf = _paths_node(True, [], 0, 0)
    variables.append(("HLIndex", blocks.add(_tree(blocks.add(empty_leaf), 0))))
    v_tree = blocks.add(_tree(blocks.add(empty_leaf), 0, block_size=128))
    variables.append(("VIndex", blocks.add(struct.pack(">IIIB", 1, v_tree, 0, 0))))
    variables.append(("Size64", blocks.add(_tree(blocks.add(empty_leaf), 0))))

    vars_bytes = struct.pack(">I", len(variables)) + b"".join(
        struct.pack(">IB", index, len(name)) + name.encode("ascii") for name, index in variables
    )
    data_start = HEADER_SIZE + len(vars_bytes)
    table = [struct.pack(">I", len(blocks.data))]
    offset = data_start
    for i, payload in enumerate(blocks.data):
        table.append(struct.pack(">II", offset if i else 0, len(payload)))
        offset += len(payload)
    free_list = struct.pack(">I", 0) + bytes(16)
    index_bytes = b"".join(table) + free_list
    index_offset = offset
    header = b"BOMStore" + struct.pack(
        ">IIIIII",
        1,
        len(blocks.data) - 1,
        index_offset,
        len(index_bytes),
        HEADER_SIZE,
        len(vars_bytes),
    )
    with out.open("wb") as f:
        f.write(header.ljust(HEADER_SIZE, b"\0"))
        f.write(vars_bytes)
        for payload in blocks.data:
            f.write(payload)
        f.write(index_bytes)

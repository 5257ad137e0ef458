"""Readers of built installers (ours and fleetctl's) for ``orbit-packager inspect``.

One module per platform turns an installer file into :class:`model.InstallerContents`: its
metadata, the Orbit settings the agent will receive, whether an enroll secret is embedded (never
its value) and the files of the Orbit root, extracted into a private directory. ``report``
describes those contents and compares them with an update repository.
"""

from __future__ import annotations

from pathlib import Path

from packager.installers.model import InstallerContents, InstallerFormatError

# First bytes of each container -> installer type (the file name is not trusted).
MAGIC = (
    (b"!<arch>\n", "deb"),
    (b"\xed\xab\xee\xdb", "rpm"),
    (b"\x28\xb5\x2f\xfd", "pkg.tar.zst"),
    (b"xar!", "pkg"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "msi"),
)


def installer_type(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    raise InstallerFormatError(
        f"{path.name} is not an installer we can read",
        hint="deb, rpm, pkg.tar.zst, pkg or msi",
    )


def read_installer(path: Path, workdir: Path) -> InstallerContents:
    """Read ``path`` (any supported type), extracting the Orbit root's files under ``workdir``
    (a private directory the caller removes)."""
    kind = installer_type(path)
    if kind == "deb":
        from packager.installers.linux import read_deb

        return read_deb(path, workdir)
    if kind == "rpm":
        from packager.installers.linux import read_rpm

        return read_rpm(path, workdir)
    if kind == "pkg.tar.zst":
        from packager.installers.linux import read_archpkg

        return read_archpkg(path, workdir)
    if kind == "pkg":
        from packager.installers.macos import read_pkg

        return read_pkg(path, workdir)
    from packager.installers.windows import read_msi

    return read_msi(path, workdir)

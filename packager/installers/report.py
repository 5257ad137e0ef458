"""What ``inspect`` shows about an installer, and how it compares with an update repository.

The embedded TUF store (``tuf-metadata.json``: go-tuf's file store, one JSON object of the
role files) says which root the agent trusts and which targets it expects; each target in the
Orbit root (``bin/<name>/<platform>/<channel>/<file>``) is hashed, checked against that store
and, with a repository, against the repository's verified targets metadata.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.installers.model import SMALL_LIMIT, InstallerContents, InstallerFormatError

if TYPE_CHECKING:
    from packager.fetch.client import UpdateClient

STORE_NAMES = ("tuf-metadata.json", "updates-metadata.json")  # current, orbit <= 1.37
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


@dataclass
class Target:
    name: str  # TUF target path: orbit/linux/stable/orbit
    file: str  # in the Orbit root: bin/orbit/linux/stable/orbit
    length: int
    sha512: str
    binary: str  # "ELF X86_64 executable", "archive", "unknown non-executable"
    version: str | None  # custom.version in the embedded targets metadata
    in_embedded_metadata: bool
    matches_embedded_metadata: bool

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Root:
    version: int
    expires: str
    key_ids: dict[str, list[str]]  # role -> key IDs
    thresholds: dict[str, int]
    raw: dict[str, Any] = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "expires": self.expires,
            "key_ids": self.key_ids,
            "thresholds": self.thresholds,
        }


@dataclass
class Report:
    contents: InstallerContents
    root: Root | None
    targets: list[Target]
    problems: list[str]  # the installer contradicts itself (a file differs from its metadata)
    differences: list[str] = field(default_factory=list)  # against the repository
    compared_with: str | None = None

    def to_json(self) -> dict[str, object]:
        c = self.contents
        out: dict[str, object] = {
            "type": c.type,
            "name": c.name,
            "version": c.version,
            "arch": c.arch,
            "fleet_url": c.settings.get("ORBIT_FLEET_URL"),
            "update_url": c.settings.get("ORBIT_UPDATE_URL"),
            "channels": channels(c.settings),
            "settings": dict(sorted(c.settings.items())),
            "enroll_secret_embedded": c.enroll_secret,
            "tuf_root": self.root.to_json() if self.root else None,
            "targets": [t.to_json() for t in self.targets],
            "problems": self.problems,
            "notes": c.notes,
        }
        if self.compared_with is not None:
            out["repository"] = {"url": self.compared_with, "differences": self.differences}
        return out


def channels(settings: dict[str, str]) -> dict[str, str]:
    names = {"orbit": "ORBIT_ORBIT_CHANNEL", "osqueryd": "ORBIT_OSQUERYD_CHANNEL"}
    if settings.get("ORBIT_FLEET_DESKTOP", "").lower() == "true":  # the MSI sets "True"
        names["desktop"] = "ORBIT_DESKTOP_CHANNEL"
    return {name: settings.get(key, "stable") for name, key in names.items()}


def _store(contents: InstallerContents) -> dict[str, Any] | None:
    for name in STORE_NAMES:
        path = contents.files.get(name)
        if path is None:
            continue
        if path.stat().st_size > SMALL_LIMIT:
            raise InstallerFormatError(f"{name} is larger than {SMALL_LIMIT} bytes")
        try:
            store = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            raise InstallerFormatError(f"{name} in the installer is not JSON") from None
        if not isinstance(store, dict):
            raise InstallerFormatError(f"{name} in the installer is not a TUF store")
        return store
    return None


def _signed(store: dict[str, Any], role: str) -> dict[str, Any] | None:
    doc = store.get(f"{role}.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict):
        return None
    signed: dict[str, Any] = doc["signed"]
    return signed


def _root(store: dict[str, Any]) -> Root | None:
    signed = _signed(store, "root")
    if signed is None:
        return None
    try:
        roles = signed["roles"]
        return Root(
            version=int(signed["version"]),
            expires=str(signed["expires"]),
            key_ids={r: sorted(map(str, roles[r]["keyids"])) for r in sorted(roles)},
            thresholds={r: int(roles[r]["threshold"]) for r in sorted(roles)},
            raw=store["root.json"],
        )
    except (KeyError, TypeError, ValueError):
        raise InstallerFormatError("the embedded root.json is malformed") from None


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha512()
    length = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            length += len(chunk)
    return length, digest.hexdigest()


def _binary(path: Path, name: str) -> str:
    if name.endswith(ARCHIVE_SUFFIXES):
        return "archive"
    from packager.fetch.inspect import inspect_binary  # lazy: only inspect needs it

    return inspect_binary(path).describe()


def describe(contents: InstallerContents) -> Report:
    store = _store(contents)
    problems: list[str] = []
    if store is None:
        problems.append("no TUF metadata (tuf-metadata.json) in the Orbit root")
        store = {}
    root = _root(store)
    if store and root is None:
        problems.append("the embedded TUF metadata has no root.json")
    targets_signed = _signed(store, "targets") or {}
    listed = targets_signed.get("targets", {})
    if not isinstance(listed, dict):
        listed = {}
    targets: list[Target] = []
    for rel, path in sorted(contents.files.items()):
        parts = rel.split("/")
        if len(parts) != 5 or parts[0] != "bin":
            continue
        name = "/".join(parts[1:])
        length, sha512 = _hash(path)
        entry = listed.get(name)
        in_meta = isinstance(entry, dict)
        matches = False
        version = None
        if isinstance(entry, dict):
            custom = entry.get("custom")
            if isinstance(custom, dict) and isinstance(custom.get("version"), str):
                version = custom["version"]
            hashes = entry.get("hashes")
            sha = hashes.get("sha512") if isinstance(hashes, dict) else None
            matches = entry.get("length") == length and sha == sha512
        targets.append(
            Target(name, rel, length, sha512, _binary(path, name), version, in_meta, matches)
        )
        if in_meta and not matches:
            problems.append(f"{rel} differs from the embedded TUF metadata of {name}")
    return Report(contents, root, targets, problems)


def compare(report: Report, client: UpdateClient, update_url: str) -> None:
    """Record in ``report.differences`` what the repository (refreshed and verified from the
    trusted root) says otherwise than the installer."""
    report.compared_with = update_url
    diffs = report.differences
    embedded_url = report.contents.settings.get("ORBIT_UPDATE_URL")
    if embedded_url is not None and embedded_url.rstrip("/") != update_url.rstrip("/"):
        diffs.append(f"the installer's update URL is {embedded_url}, not {update_url}")
    published = client.targets()
    for target in report.targets:
        info = published.get(target.name)
        if info is None:
            diffs.append(f"target {target.name} is not in the repository")
            continue
        if info.length != target.length or info.hashes.get("sha512") != target.sha512:
            diffs.append(
                f"{target.file} differs from the repository's {target.name} "
                f"({target.length} bytes, sha512 {target.sha512[:16]}…; repository: "
                f"{info.length} bytes, sha512 {str(info.hashes.get('sha512', '?'))[:16]}…)"
            )
    wanted = set(channels(report.contents.settings).items())
    have = {tuple(t.name.split("/")[0::2]) for t in report.targets}
    for name, channel in sorted(wanted):
        if (name, channel) not in have:
            diffs.append(f"no {name} target of channel {channel} in the installer")
    current = json.loads(client.trusted_metadata()["root.json"])
    if report.root is None:
        diffs.append("the installer embeds no TUF root")
        return
    repo_version = int(current["signed"]["version"])
    if report.root.version > repo_version:
        diffs.append(
            f"the embedded root is version {report.root.version}, newer than the "
            f"repository's {repo_version}"
        )
    elif report.root.version == repo_version and report.root.raw != current:
        diffs.append(f"the embedded root version {repo_version} is not the repository's")

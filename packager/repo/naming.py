"""Target paths in Fleet's update repository: ``<name>/<platform>/<channel>/<file>``.

Every component is validated before use: it becomes a path on disk and in URLs, so separators,
``..`` and other unsafe characters are refused with an error naming the flag.
"""

from __future__ import annotations

import re

from packager.errors import UsageError

_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_MAX_COMPONENT = 128


def check_component(value: str, flag: str) -> str:
    """Return ``value`` if it is a safe single path component, else raise a UsageError."""
    if not value:
        raise UsageError(f"{flag} must not be empty")
    if len(value) > _MAX_COMPONENT:
        raise UsageError(f"{flag} {value!r} is longer than {_MAX_COMPONENT} characters")
    if value in (".", "..") or ".." in value or not _COMPONENT.fullmatch(value):
        raise UsageError(
            f"{flag} {value!r} is not allowed",
            hint="use letters, digits and . _ + - (no path separators, no '..', no spaces)",
        )
    return value


def check_name(name: str) -> str:
    """Target names are one component, or ``extensions/<component>`` as fleetctl allows."""
    if name.startswith("extensions/"):
        check_component(name.removeprefix("extensions/"), "--name")
        return name
    return check_component(name, "--name")


def target_filename(name: str, platform: str, source_filename: str) -> str:
    """The stored file name fleetctl picks from the name, platform and source file name."""
    base = name.removeprefix("extensions/")
    if name == "desktop" and platform in ("windows", "windows-arm64"):
        # fleetctl checks only "windows"; Orbit's windows-arm64 options use the same file name.
        return "fleet-desktop.exe"
    if name == "desktop" and platform in ("linux", "linux-arm64"):
        return "desktop.tar.gz"
    for suffix in (".ext.exe", ".exe", ".app.tar.gz", ".pkg", ".ext"):
        if source_filename.endswith(suffix):
            return base + suffix
    return base


def target_paths(name: str, platform: str, channels: list[str], source_filename: str) -> list[str]:
    filename = target_filename(name, platform, source_filename)
    return [f"{name}/{platform}/{channel}/{filename}" for channel in channels]


def check_target_path(path: str) -> str:
    """Validate a target path given on the command line (``remove``)."""
    parts = path.strip("/").split("/")
    if len(parts) < 2 or any(not p or p in (".", "..") for p in parts):
        raise UsageError(f"target path {path!r} is not valid", hint="e.g. orbit/linux/stable/orbit")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            raise UsageError(f"target path {path!r} has an unsafe component {part!r}")
    return "/".join(parts)

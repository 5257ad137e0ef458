"""``package --config builds.toml``: a CI matrix of installers built from one fetch.

The file names, per build, what the command line would: its types, architecture, Fleet URL,
channels and flags, under their command-line names (``fleet-url`` or ``fleet_url``). Settings
shared by the whole run (update server, trusted root, cache, tooling) go in ``[defaults]`` or
on the command line, since one TUF refresh serves every build. A build names where its team's
enroll secret comes from (``enroll-secret-env = "VAR"`` or ``enroll-secret-file = "path"``),
never the secret itself: the file is meant to be committed. Relative paths are relative to the
file's directory.

```toml
[defaults]
update-url = "https://tuf.example.com"
update-roots = "roots.json"
outdir = "dist"

[[build]]
type = ["deb", "rpm"]
fleet-url = "https://fleet.example.com"
enroll-secret-env = "TEAM_A_SECRET"

[[build]]
type = "msi"
arch = "arm64"
fleet-url = "https://fleet.example.com"
enroll-secret-file = "secrets/team-b.txt"
outdir = "dist/team-b"
```
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from packager.errors import UsageError
from packager.options import BuildRequest, parse_package_types
from packager.repo.durations import parse_duration

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# One fetch serves every build: these are the run's, never a build's.
SHARED = frozenset(
    {
        "update_url",
        "update_roots",
        "update_tls_certificate",
        "update_tls_client_certificate",
        "update_tls_client_key",
        "cache_dir",
        "no_cache",
        "offline",
        "tooling",
        "tooling_image",
        "verbose",
    }
)
_FIELDS = {f.name: str(f.type) for f in fields(BuildRequest)} | {"enroll_secret_env": "str"}
_NOT_IN_FILE = {"notes", "enroll_secret", "type"}
_MAX_BUILDS = 1000


def load_matrix(
    path: Path, given: dict[str, Any], default_cache: Callable[[], Path]
) -> list[BuildRequest]:
    """The requests of every build in ``path``. ``given`` holds the run's shared settings given
    on the command line; they win over ``[defaults]``, which win over the built-in defaults
    (``default_cache()`` for the cache)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "build"}
    if unknown:
        raise UsageError(
            f"--config {path}: unknown table {sorted(unknown)[0]!r}",
            hint="the file holds [defaults] and [[build]] tables",
        )
    base = path.parent
    raw_defaults = data.get("defaults", {})
    defaults = _settings(raw_defaults, "[defaults]", base, allow_shared=True)
    builds = data.get("build", [])
    if not isinstance(builds, list) or not builds:
        raise UsageError(f"--config {path} lists no [[build]]")
    if len(builds) > _MAX_BUILDS:
        raise UsageError(f"--config {path} lists more than {_MAX_BUILDS} builds")
    run = dict(given)
    for key, value in defaults.items():
        if key in SHARED:
            run.setdefault(key, value)
    if not run.get("no_cache") and run.get("cache_dir") is None:
        run["cache_dir"] = default_cache()
    requests: list[BuildRequest] = []
    for index, raw in enumerate(builds, start=1):
        where = f"[[build]] {index}"
        if not isinstance(raw, dict):
            raise UsageError(f"--config {path}: {where} is not a table")
        settings = {
            **{k: v for k, v in defaults.items() if k not in SHARED},
            **_settings(raw, where, base, allow_shared=False),
        }
        default_type = raw_defaults.get("type") if isinstance(raw_defaults, dict) else None
        types = _types(raw.get("type", default_type), where)
        secret_env = settings.pop("enroll_secret_env", None)
        if secret_env is not None:
            if "enroll_secret_file" in settings:
                raise UsageError(f"{where}: give enroll-secret-env or enroll-secret-file, not both")
            secret = os.environ.get(str(secret_env))
            if not secret:
                raise UsageError(
                    f"{where}: environment variable {secret_env} (enroll-secret-env) is not set"
                )
            settings["enroll_secret"] = secret
        if len(types) > 1 and settings.get("outfile") is not None:
            raise UsageError(f"{where}: outfile names one installer; with several types use outdir")
        for kind in types:
            try:
                requests.append(BuildRequest(type=kind, **run, **settings))
            except UsageError as exc:
                raise UsageError(f"{where} ({kind}): {exc.message}", hint=exc.hint) from None
    return requests


def _types(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        raise UsageError(f"{where} has no type", hint='e.g. type = "deb" or ["deb", "rpm"]')
    items = [str(v) for v in value] if isinstance(value, list) else str(value).split(",")
    try:
        return parse_package_types(items)
    except UsageError as exc:
        raise UsageError(f"{where}: type {exc.message}") from None


def _settings(raw: object, where: str, base: Path, *, allow_shared: bool) -> dict[str, Any]:
    """``raw``'s keys as BuildRequest fields with their types; every refusal names the key."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where} is not a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        flag = name.replace("_", "-")
        if name == "type":
            continue
        if name == "enroll_secret":
            raise UsageError(
                f"{where}: the file must not hold the enroll secret itself",
                hint='use enroll-secret-env = "VARIABLE" or enroll-secret-file = "path"',
            )
        if name in _NOT_IN_FILE or name not in _FIELDS:
            raise UsageError(f"{where}: unknown setting {flag!r}")
        if name in SHARED and not allow_shared:
            raise UsageError(
                f"{where}: {flag} is shared by every build of the run (one fetch serves them)",
                hint="set it in [defaults] or on the command line",
            )
        if name == "update_roots" and isinstance(value, str) and not value.lstrip().startswith("{"):
            value = str(base / value)  # a file, relative to the config file like every path
        out[name] = _convert(value, _FIELDS[name], f"{where}: {flag}", base)
    return out


def _convert(value: object, kind: str, what: str, base: Path) -> object:
    if kind == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{what} must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{what} must be a whole number")
        return value
    if kind == "timedelta":
        return parse_duration(str(value), what=what) if not isinstance(value, timedelta) else value
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string")
    if kind.startswith("Path"):
        return base / value
    return value

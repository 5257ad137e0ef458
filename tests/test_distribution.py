"""What `pip install .` (not editable: the Docker image, a user's install) ships: every package
directory of the source tree is listed in pyproject.toml, since setuptools installs only listed
packages. packager.cli and packager.installers were missing, and the installed command failed
with "No module named 'packager.cli'" (found building the Docker image)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    table = data["tool"]["setuptools"]
    assert isinstance(table, dict)
    return table


def _source_dir(package: str, package_dir: dict[str, str]) -> Path:
    """Where setuptools takes ``package`` from (the longest package-dir prefix wins)."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in package_dir:
            return ROOT / package_dir[prefix] / Path(*parts[n:])
    return ROOT / Path(*parts)


def test_every_package_directory_is_listed() -> None:
    table = _setuptools()
    listed = set(table["packages"])  # type: ignore[call-overload]
    package_dir = dict(table.get("package-dir", {}))  # type: ignore[call-overload]
    shipped = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "packager").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix in (".py", ".pem", ".json", ".dll")
    }
    templates = {
        "packager.templates." + ".".join(p.parent.relative_to(ROOT / "templates").parts)
        for p in (ROOT / "templates").rglob("*.j2")
    }
    assert sorted((shipped | templates | {"packager.templates"}) - listed) == []
    for package in listed:  # and each listed one exists where setuptools looks for it
        assert _source_dir(package, package_dir).is_dir(), package


def test_every_template_and_data_file_matches_a_package_data_pattern() -> None:
    table = _setuptools()
    patterns = dict(table["package-data"])  # type: ignore[call-overload]
    package_dir = dict(table.get("package-dir", {}))  # type: ignore[call-overload]
    missing = []
    for package, globs in patterns.items():
        source = _source_dir(package, package_dir)
        missing += [
            str(f.relative_to(ROOT))
            for f in source.iterdir()
            if f.is_file()
            and f.suffix in (".j2", ".pem", ".json", ".dll")
            and not any(f.match(g) for g in globs)
        ]
    for directory in ("templates/linux", "templates/macos"):
        package = "packager." + directory.replace("/", ".")
        assert package in patterns, package
    assert missing == []

"""What is mutated, how it is grouped in the report, and which tests each file's mutants run.

The map is explicit and reviewed: a first version came from coverage (``mutate/derive_map.py``:
every test file run alone under coverage, child processes included), then each entry was
checked by hand. A test file is listed for a module when it exercises that module's behaviour
(directly or through the command line); files that only pass through it while setting up
something else are left out where they are slow and never the first to fail. Within an entry,
files are ordered so that the sharpest and fastest come first (pytest runs with ``-x``: a
killed mutant stops at its first failing test).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Report groups: a package (every file under it) or a single module. ``packager/formats``
# includes the renderer, the payload layout and the Jinja templates, as the issue asks.
GROUPS: dict[str, tuple[str, ...]] = {
    "packager/repo": ("packager/repo/",),
    "packager/fetch": ("packager/fetch/",),
    "packager/formats": (
        "packager/formats/",
        "packager/render.py",
        "packager/layout.py",
        "templates/",
    ),
    "packager/options.py": ("packager/options.py",),
    "packager/writers": ("packager/writers/",),
}

# Never run for a mutant: Docker (needs an engine), acceptance (booted systemd), Wine (minutes
# per test, and other work on this machine runs Wine concurrently).
PYTEST_MARKERS = "not acceptance and not docker and not wine"
EXCLUDED_TESTS = frozenset({"tests/test_docker.py", "tests/test_msi_wine.py"})

# Shared test code: part of every cache key (a change to it re-runs everything).
SUPPORT_FILES = ("tests/conftest.py", "tests/helpers.py", "tests/systemd_env.py")

# In the private copy, ``packager/templates`` is a link to ``templates/`` (what the wheel and
# the editable install provide), so mutated templates are the ones rendered.
LINKS: dict[str, str] = {"packager/templates": "../templates"}


def group_of(path: str, groups: dict[str, tuple[str, ...]] = GROUPS) -> str | None:
    for name, prefixes in groups.items():
        for prefix in prefixes:
            if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                return name
    return None


# The module that renders each template directory: a template mutant runs the tests that
# execute the line of that module naming the template (``"orbit.env.j2"``), or, for a name built
# at run time, the line naming its suffix (``f"{name}.sh.j2"``).
TEMPLATE_PROXIES: dict[str, str] = {
    "templates/linux/": "packager/formats/deb_rpm.py",
    "templates/macos/": "packager/formats/pkg.py",
}


def template_proxy(root: Path, template: str) -> tuple[str, tuple[int, ...]] | None:
    """(module, lines) standing in for ``template`` in coverage data, if it has a proxy."""
    for prefix, module in TEMPLATE_PROXIES.items():
        if not template.startswith(prefix):
            continue
        name = template.rsplit("/", 1)[-1]
        text = (root / module).read_text(encoding="utf-8")
        # Coverage reports a statement by its first line: a multi-line call is that line.
        simple = [
            n
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.stmt) and not hasattr(n, "body")
        ]
        for needle in (f'"{name}"', name.split(".", 1)[-1] + '"'):
            found = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
            lines = {
                n.lineno for n in simple for i in found if n.lineno <= i <= (n.end_lineno or i)
            }
            if lines:
                return module, tuple(sorted(lines))
    return None


def scope_files(root: Path = ROOT, groups: dict[str, tuple[str, ...]] = GROUPS) -> list[str]:
    """Every mutable file in scope: Python sources and Jinja templates, sorted."""
    found: set[str] = set()
    for prefixes in groups.values():
        for prefix in prefixes:
            target = root / prefix
            if target.is_file():
                found.add(prefix)
            elif target.is_dir():
                for p in target.rglob("*"):
                    if p.is_file() and p.suffix in {".py", ".j2"} and "__pycache__" not in p.parts:
                        found.add(p.relative_to(root).as_posix())
    return sorted(found)


_REPO_CORE = (
    "tests/test_keys.py",
    "tests/test_status.py",
    "tests/test_repo_client.py",
    "tests/test_update_roots.py",
    "tests/test_non_utc.py",
    "tests/test_local_attacks.py",
    "tests/test_add_window.py",
    "tests/test_crash.py",
)

# Derived with ``python -m mutate.derive_map`` (lines: function-body lines of the module the file
# ran; seconds: the whole file under coverage), then reviewed:
# * Incidental entries (a file that runs one line of a module while doing something else, e.g.
#   the one function of formats/msi.py every command line calls) are kept: with per-test
#   selection they cost nothing unless that very line is mutated, and they do exercise it.
# * tests/test_msi_wine.py and tests/test_docker.py are left out (see EXCLUDED_TESTS), and so
#   are Wine-marked tests everywhere: the MSI's behaviour under Wine is not part of this run.
# * Every file stays ordered fastest first, tests/test_crash.py (random SIGKILL trials, minutes)
#   last: a mutant is killed by the cheapest test that can.
# * Templates have no coverage of their own: each gets the tests of the module rendering it
#   (TEMPLATE_PROXIES), and per-test selection by the line of that module naming it.
TESTS: dict[str, tuple[str, ...]] = {
    "packager/fetch/__init__.py": (),
    "packager/fetch/cache.py": (
        "tests/test_version.py",  # 66 lines, 8s
        "tests/test_pkg.py",  # 60 lines, 11s
        "tests/test_deb_writer.py",  # 66 lines, 14s
        "tests/test_verify_download_dir.py",  # 48 lines, 17s
        "tests/test_msi.py",  # 66 lines, 18s
        "tests/test_linux_packages.py",  # 66 lines, 26s
        "tests/test_fetch_cli.py",  # 77 lines, 28s
        "tests/test_update_roots.py",  # 46 lines, 29s
        "tests/test_archive_targets.py",  # 66 lines, 32s
        "tests/test_fetch_targets.py",  # 66 lines, 33s
        "tests/test_fetch_limits.py",  # 64 lines, 34s
        "tests/test_non_utc.py",  # 73 lines, 40s
        "tests/test_environment.py",  # 70 lines, 40s
        "tests/test_verify.py",  # 48 lines, 51s
        "tests/test_fetch.py",  # 84 lines, 72s
        "tests/test_local_attacks.py",  # 83 lines, 78s
    ),
    "packager/fetch/client.py": (
        "tests/test_version.py",  # 86 lines, 8s
        "tests/test_pkg.py",  # 85 lines, 11s
        "tests/test_deb_writer.py",  # 86 lines, 14s
        "tests/test_verify_download_dir.py",  # 102 lines, 17s
        "tests/test_msi.py",  # 86 lines, 18s
        "tests/test_linux_packages.py",  # 86 lines, 26s
        "tests/test_fetch_cli.py",  # 121 lines, 28s
        "tests/test_update_roots.py",  # 108 lines, 29s
        "tests/test_archive_targets.py",  # 86 lines, 32s
        "tests/test_fetch_targets.py",  # 57 lines, 33s
        "tests/test_fetch_limits.py",  # 132 lines, 34s
        "tests/test_non_utc.py",  # 141 lines, 40s
        "tests/test_environment.py",  # 90 lines, 40s
        "tests/test_verify.py",  # 121 lines, 51s
        "tests/test_fetch.py",  # 139 lines, 72s
        "tests/test_local_attacks.py",  # 92 lines, 78s
    ),
    "packager/fetch/extract.py": (
        "tests/test_extract.py",  # 282 lines, 8s
        "tests/test_pkg.py",  # 134 lines, 11s
        "tests/test_linux_packages.py",  # 129 lines, 26s
        "tests/test_archive_targets.py",  # 176 lines, 32s
        "tests/test_fetch_targets.py",  # 218 lines, 33s
    ),
    "packager/fetch/gotuf.py": (
        "tests/test_version.py",  # 21 lines, 8s
        "tests/test_pkg.py",  # 21 lines, 11s
        "tests/test_deb_writer.py",  # 21 lines, 14s
        "tests/test_verify_download_dir.py",  # 40 lines, 17s
        "tests/test_msi.py",  # 21 lines, 18s
        "tests/test_linux_packages.py",  # 21 lines, 26s
        "tests/test_fetch_cli.py",  # 21 lines, 28s
        "tests/test_update_roots.py",  # 42 lines, 29s
        "tests/test_archive_targets.py",  # 21 lines, 32s
        "tests/test_fetch_targets.py",  # 21 lines, 33s
        "tests/test_fetch_limits.py",  # 40 lines, 34s
        "tests/test_non_utc.py",  # 68 lines, 40s
        "tests/test_environment.py",  # 21 lines, 40s
        "tests/test_verify.py",  # 40 lines, 51s
        "tests/test_fetch.py",  # 49 lines, 72s
        "tests/test_local_attacks.py",  # 21 lines, 78s
    ),
    "packager/fetch/http.py": (
        "tests/test_version.py",  # 90 lines, 8s
        "tests/test_pkg.py",  # 89 lines, 11s
        "tests/test_deb_writer.py",  # 89 lines, 14s
        "tests/test_verify_download_dir.py",  # 84 lines, 17s
        "tests/test_msi.py",  # 89 lines, 18s
        "tests/test_gotuf_fixture.py",  # 2 lines, 26s
        "tests/test_linux_packages.py",  # 89 lines, 26s
        "tests/test_fetch_cli.py",  # 85 lines, 28s
        "tests/test_update_roots.py",  # 84 lines, 29s
        "tests/test_status.py",  # 2 lines, 31s
        "tests/test_archive_targets.py",  # 90 lines, 32s
        "tests/test_fetch_targets.py",  # 82 lines, 33s
        "tests/test_fetch_limits.py",  # 168 lines, 34s
        "tests/test_non_utc.py",  # 90 lines, 40s
        "tests/test_environment.py",  # 90 lines, 40s
        "tests/test_key_files.py",  # 2 lines, 41s
        "tests/test_gotuf_client.py",  # 2 lines, 48s
        "tests/test_verify.py",  # 110 lines, 51s
        "tests/test_errors.py",  # 2 lines, 51s
        "tests/test_repo_client.py",  # 2 lines, 71s
        "tests/test_fetch.py",  # 116 lines, 72s
        "tests/test_local_attacks.py",  # 99 lines, 78s
        "tests/test_add_window.py",  # 2 lines, 80s
        "tests/test_crash.py",  # 2 lines, 406s
    ),
    "packager/fetch/inspect.py": (
        "tests/test_version.py",  # 13 lines, 8s
        "tests/test_pkg.py",  # 17 lines, 11s
        "tests/test_windows_binaries.py",  # 17 lines, 12s
        "tests/test_deb_writer.py",  # 13 lines, 14s
        "tests/test_msi.py",  # 23 lines, 18s
        "tests/test_linux_packages.py",  # 13 lines, 26s
        "tests/test_fetch_cli.py",  # 15 lines, 28s
        "tests/test_archive_targets.py",  # 13 lines, 32s
        "tests/test_fetch_targets.py",  # 39 lines, 33s
        "tests/test_non_utc.py",  # 15 lines, 40s
        "tests/test_environment.py",  # 13 lines, 40s
        "tests/test_local_attacks.py",  # 15 lines, 78s
    ),
    "packager/fetch/progress.py": (
        "tests/test_version.py",  # 5 lines, 8s
        "tests/test_pkg.py",  # 5 lines, 11s
        "tests/test_deb_writer.py",  # 5 lines, 14s
        "tests/test_verify_download_dir.py",  # 5 lines, 17s
        "tests/test_msi.py",  # 5 lines, 18s
        "tests/test_linux_packages.py",  # 5 lines, 26s
        "tests/test_fetch_cli.py",  # 20 lines, 28s
        "tests/test_update_roots.py",  # 5 lines, 29s
        "tests/test_archive_targets.py",  # 5 lines, 32s
        "tests/test_fetch_limits.py",  # 5 lines, 34s
        "tests/test_non_utc.py",  # 5 lines, 40s
        "tests/test_environment.py",  # 5 lines, 40s
        "tests/test_verify.py",  # 5 lines, 51s
        "tests/test_local_attacks.py",  # 5 lines, 78s
    ),
    "packager/fetch/targets.py": (
        "tests/test_version.py",  # 73 lines, 8s
        "tests/test_pkg.py",  # 46 lines, 11s
        "tests/test_deb_writer.py",  # 44 lines, 14s
        "tests/test_msi.py",  # 49 lines, 18s
        "tests/test_linux_packages.py",  # 48 lines, 26s
        "tests/test_fetch_cli.py",  # 66 lines, 28s
        "tests/test_archive_targets.py",  # 60 lines, 32s
        "tests/test_fetch_targets.py",  # 51 lines, 33s
        "tests/test_fetch_limits.py",  # 30 lines, 34s
        "tests/test_non_utc.py",  # 60 lines, 40s
        "tests/test_environment.py",  # 41 lines, 40s
        "tests/test_local_attacks.py",  # 60 lines, 78s
    ),
    "packager/fetch/verify.py": (
        "tests/test_verify_download_dir.py",  # 94 lines, 17s
        "tests/test_update_roots.py",  # 36 lines, 29s
        "tests/test_fetch_limits.py",  # 29 lines, 34s
        "tests/test_non_utc.py",  # 39 lines, 40s
        "tests/test_verify.py",  # 83 lines, 51s
    ),
    "packager/formats/__init__.py": (),
    "packager/formats/base.py": (
        "tests/test_pkg.py",  # 5 lines, 11s
        "tests/test_deb_writer.py",  # 4 lines, 14s
        "tests/test_linux_packages.py",  # 5 lines, 26s
        "tests/test_archive_targets.py",  # 5 lines, 32s
        "tests/test_non_utc.py",  # 5 lines, 40s
        "tests/test_environment.py",  # 4 lines, 40s
        "tests/test_local_attacks.py",  # 4 lines, 78s
    ),
    "packager/formats/deb_rpm.py": (
        "tests/test_version.py",  # 4 lines, 8s
        "tests/test_deb_writer.py",  # 81 lines, 14s
        "tests/test_linux_packages.py",  # 87 lines, 26s
        "tests/test_archive_targets.py",  # 87 lines, 32s
        "tests/test_fetch_limits.py",  # 4 lines, 34s
        "tests/test_non_utc.py",  # 83 lines, 40s
        "tests/test_environment.py",  # 78 lines, 40s
        "tests/test_env_file_property.py",  # 5 lines, 58s
        "tests/test_local_attacks.py",  # 81 lines, 78s
    ),
    "packager/formats/msi.py": (
        "tests/test_version.py",  # 1 lines, 8s
        "tests/test_pkg.py",  # 1 lines, 11s
        "tests/test_deb_writer.py",  # 1 lines, 14s
        "tests/test_verify_download_dir.py",  # 1 lines, 17s
        "tests/test_msi.py",  # 138 lines, 18s
        "tests/test_gotuf_fixture.py",  # 1 lines, 26s
        "tests/test_linux_packages.py",  # 1 lines, 26s
        "tests/test_fetch_cli.py",  # 1 lines, 28s
        "tests/test_update_roots.py",  # 1 lines, 29s
        "tests/test_status.py",  # 1 lines, 31s
        "tests/test_archive_targets.py",  # 1 lines, 32s
        "tests/test_fetch_limits.py",  # 1 lines, 34s
        "tests/test_non_utc.py",  # 1 lines, 40s
        "tests/test_environment.py",  # 1 lines, 40s
        "tests/test_key_files.py",  # 1 lines, 41s
        "tests/test_gotuf_client.py",  # 1 lines, 48s
        "tests/test_verify.py",  # 1 lines, 51s
        "tests/test_errors.py",  # 1 lines, 51s
        "tests/test_repo_client.py",  # 1 lines, 71s
        "tests/test_fetch.py",  # 1 lines, 72s
        "tests/test_local_attacks.py",  # 1 lines, 78s
        "tests/test_add_window.py",  # 1 lines, 80s
        "tests/test_crash.py",  # 1 lines, 406s
    ),
    "packager/formats/pkg.py": (
        "tests/test_pkg.py",  # 44 lines, 11s
    ),
    "packager/layout.py": (
        "tests/test_pkg.py",  # 24 lines, 11s
        "tests/test_deb_writer.py",  # 39 lines, 14s
        "tests/test_msi.py",  # 23 lines, 18s
        "tests/test_linux_packages.py",  # 40 lines, 26s
        "tests/test_archive_targets.py",  # 40 lines, 32s
        "tests/test_non_utc.py",  # 39 lines, 40s
        "tests/test_environment.py",  # 38 lines, 40s
        "tests/test_local_attacks.py",  # 39 lines, 78s
    ),
    "packager/options.py": (
        "tests/test_version.py",  # 58 lines, 8s
        "tests/test_pkg.py",  # 70 lines, 11s
        "tests/test_deb_writer.py",  # 73 lines, 14s
        "tests/test_msi.py",  # 79 lines, 18s
        "tests/test_linux_packages.py",  # 88 lines, 26s
        "tests/test_archive_targets.py",  # 70 lines, 32s
        "tests/test_fetch_limits.py",  # 54 lines, 34s
        "tests/test_non_utc.py",  # 70 lines, 40s
        "tests/test_environment.py",  # 70 lines, 40s
        "tests/test_env_file_property.py",  # 70 lines, 58s
        "tests/test_local_attacks.py",  # 73 lines, 78s
    ),
    "packager/render.py": (
        "tests/test_pkg.py",  # 9 lines, 11s
        "tests/test_deb_writer.py",  # 11 lines, 14s
        "tests/test_linux_packages.py",  # 11 lines, 26s
        "tests/test_archive_targets.py",  # 11 lines, 32s
        "tests/test_non_utc.py",  # 11 lines, 40s
        "tests/test_environment.py",  # 11 lines, 40s
        "tests/test_env_file_property.py",  # 11 lines, 58s
        "tests/test_local_attacks.py",  # 11 lines, 78s
    ),
    "packager/repo/__init__.py": (),
    "packager/repo/durations.py": (
        "tests/test_version.py",  # 10 lines, 8s
        "tests/test_pkg.py",  # 10 lines, 11s
        "tests/test_deb_writer.py",  # 10 lines, 14s
        "tests/test_verify_download_dir.py",  # 10 lines, 17s
        "tests/test_msi.py",  # 10 lines, 18s
        "tests/test_gotuf_fixture.py",  # 10 lines, 26s
        "tests/test_linux_packages.py",  # 10 lines, 26s
        "tests/test_fetch_cli.py",  # 10 lines, 28s
        "tests/test_update_roots.py",  # 10 lines, 29s
        "tests/test_status.py",  # 22 lines, 31s
        "tests/test_archive_targets.py",  # 10 lines, 32s
        "tests/test_fetch_limits.py",  # 12 lines, 34s
        "tests/test_non_utc.py",  # 18 lines, 40s
        "tests/test_environment.py",  # 10 lines, 40s
        "tests/test_key_files.py",  # 10 lines, 41s
        "tests/test_gotuf_client.py",  # 10 lines, 48s
        "tests/test_verify.py",  # 10 lines, 51s
        "tests/test_errors.py",  # 12 lines, 51s
        "tests/test_repo_client.py",  # 10 lines, 71s
        "tests/test_fetch.py",  # 10 lines, 72s
        "tests/test_local_attacks.py",  # 10 lines, 78s
        "tests/test_add_window.py",  # 10 lines, 80s
        "tests/test_crash.py",  # 10 lines, 406s
    ),
    "packager/repo/fsutil.py": (
        "tests/test_version.py",  # 56 lines, 8s
        "tests/test_pkg.py",  # 58 lines, 11s
        "tests/test_deb_writer.py",  # 58 lines, 14s
        "tests/test_verify_download_dir.py",  # 47 lines, 17s
        "tests/test_msi.py",  # 58 lines, 18s
        "tests/test_gotuf_fixture.py",  # 54 lines, 26s
        "tests/test_linux_packages.py",  # 58 lines, 26s
        "tests/test_fetch_cli.py",  # 56 lines, 28s
        "tests/test_update_roots.py",  # 47 lines, 29s
        "tests/test_status.py",  # 32 lines, 31s
        "tests/test_archive_targets.py",  # 73 lines, 32s
        "tests/test_fetch_targets.py",  # 56 lines, 33s
        "tests/test_fetch_limits.py",  # 56 lines, 34s
        "tests/test_non_utc.py",  # 58 lines, 40s
        "tests/test_environment.py",  # 41 lines, 40s
        "tests/test_key_files.py",  # 32 lines, 41s
        "tests/test_gotuf_client.py",  # 54 lines, 48s
        "tests/test_verify.py",  # 47 lines, 51s
        "tests/test_errors.py",  # 47 lines, 51s
        "tests/test_repo_client.py",  # 54 lines, 71s
        "tests/test_fetch.py",  # 56 lines, 72s
        "tests/test_local_attacks.py",  # 93 lines, 78s
        "tests/test_add_window.py",  # 53 lines, 80s
        "tests/test_crash_points.py",  # 1 lines, 91s
        "tests/test_crash.py",  # 57 lines, 406s
    ),
    "packager/repo/keys.py": (
        "tests/test_keys.py",  # 62 lines, 5s
        "tests/test_version.py",  # 42 lines, 8s
        "tests/test_pkg.py",  # 42 lines, 11s
        "tests/test_deb_writer.py",  # 42 lines, 14s
        "tests/test_verify_download_dir.py",  # 60 lines, 17s
        "tests/test_msi.py",  # 42 lines, 18s
        "tests/test_gotuf_fixture.py",  # 67 lines, 26s
        "tests/test_linux_packages.py",  # 42 lines, 26s
        "tests/test_fetch_cli.py",  # 60 lines, 28s
        "tests/test_update_roots.py",  # 60 lines, 29s
        "tests/test_status.py",  # 60 lines, 31s
        "tests/test_archive_targets.py",  # 42 lines, 32s
        "tests/test_fetch_targets.py",  # 60 lines, 33s
        "tests/test_fetch_limits.py",  # 60 lines, 34s
        "tests/test_non_utc.py",  # 48 lines, 40s
        "tests/test_environment.py",  # 68 lines, 40s
        "tests/test_key_files.py",  # 73 lines, 41s
        "tests/test_gotuf_client.py",  # 60 lines, 48s
        "tests/test_verify.py",  # 60 lines, 51s
        "tests/test_errors.py",  # 68 lines, 51s
        "tests/test_repo_client.py",  # 60 lines, 71s
        "tests/test_fetch.py",  # 60 lines, 72s
        "tests/test_local_attacks.py",  # 60 lines, 78s
        "tests/test_add_window.py",  # 60 lines, 80s
        "tests/test_crash_points.py",  # 44 lines, 91s
        "tests/test_crash.py",  # 60 lines, 406s
    ),
    "packager/repo/metadata.py": (
        "tests/test_keys.py",  # 3 lines, 5s
        "tests/test_version.py",  # 22 lines, 8s
        "tests/test_pkg.py",  # 22 lines, 11s
        "tests/test_deb_writer.py",  # 22 lines, 14s
        "tests/test_verify_download_dir.py",  # 21 lines, 17s
        "tests/test_msi.py",  # 22 lines, 18s
        "tests/test_gotuf_fixture.py",  # 22 lines, 26s
        "tests/test_linux_packages.py",  # 22 lines, 26s
        "tests/test_fetch_cli.py",  # 21 lines, 28s
        "tests/test_update_roots.py",  # 21 lines, 29s
        "tests/test_status.py",  # 27 lines, 31s
        "tests/test_archive_targets.py",  # 22 lines, 32s
        "tests/test_fetch_targets.py",  # 21 lines, 33s
        "tests/test_fetch_limits.py",  # 21 lines, 34s
        "tests/test_non_utc.py",  # 27 lines, 40s
        "tests/test_environment.py",  # 22 lines, 40s
        "tests/test_key_files.py",  # 21 lines, 41s
        "tests/test_gotuf_client.py",  # 22 lines, 48s
        "tests/test_verify.py",  # 22 lines, 51s
        "tests/test_errors.py",  # 23 lines, 51s
        "tests/test_repo_client.py",  # 22 lines, 71s
        "tests/test_fetch.py",  # 23 lines, 72s
        "tests/test_local_attacks.py",  # 21 lines, 78s
        "tests/test_add_window.py",  # 21 lines, 80s
        "tests/test_crash_points.py",  # 3 lines, 91s
        "tests/test_crash.py",  # 22 lines, 406s
    ),
    "packager/repo/naming.py": (
        "tests/test_version.py",  # 14 lines, 8s
        "tests/test_pkg.py",  # 4 lines, 11s
        "tests/test_deb_writer.py",  # 4 lines, 14s
        "tests/test_verify_download_dir.py",  # 14 lines, 17s
        "tests/test_msi.py",  # 4 lines, 18s
        "tests/test_gotuf_fixture.py",  # 19 lines, 26s
        "tests/test_linux_packages.py",  # 4 lines, 26s
        "tests/test_fetch_cli.py",  # 14 lines, 28s
        "tests/test_update_roots.py",  # 14 lines, 29s
        "tests/test_archive_targets.py",  # 12 lines, 32s
        "tests/test_fetch_targets.py",  # 16 lines, 33s
        "tests/test_fetch_limits.py",  # 14 lines, 34s
        "tests/test_non_utc.py",  # 4 lines, 40s
        "tests/test_environment.py",  # 4 lines, 40s
        "tests/test_key_files.py",  # 14 lines, 41s
        "tests/test_gotuf_client.py",  # 20 lines, 48s
        "tests/test_verify.py",  # 15 lines, 51s
        "tests/test_errors.py",  # 21 lines, 51s
        "tests/test_env_file_property.py",  # 4 lines, 58s
        "tests/test_repo_client.py",  # 24 lines, 71s
        "tests/test_fetch.py",  # 14 lines, 72s
        "tests/test_local_attacks.py",  # 14 lines, 78s
        "tests/test_add_window.py",  # 14 lines, 80s
        "tests/test_crash.py",  # 14 lines, 406s
    ),
    "packager/repo/passphrase.py": (
        "tests/test_version.py",  # 14 lines, 8s
        "tests/test_pkg.py",  # 14 lines, 11s
        "tests/test_deb_writer.py",  # 14 lines, 14s
        "tests/test_verify_download_dir.py",  # 15 lines, 17s
        "tests/test_msi.py",  # 14 lines, 18s
        "tests/test_gotuf_fixture.py",  # 15 lines, 26s
        "tests/test_linux_packages.py",  # 14 lines, 26s
        "tests/test_fetch_cli.py",  # 15 lines, 28s
        "tests/test_update_roots.py",  # 15 lines, 29s
        "tests/test_status.py",  # 15 lines, 31s
        "tests/test_archive_targets.py",  # 15 lines, 32s
        "tests/test_fetch_targets.py",  # 15 lines, 33s
        "tests/test_fetch_limits.py",  # 15 lines, 34s
        "tests/test_non_utc.py",  # 14 lines, 40s
        "tests/test_environment.py",  # 32 lines, 40s
        "tests/test_key_files.py",  # 15 lines, 41s
        "tests/test_gotuf_client.py",  # 15 lines, 48s
        "tests/test_verify.py",  # 15 lines, 51s
        "tests/test_errors.py",  # 35 lines, 51s
        "tests/test_repo_client.py",  # 15 lines, 71s
        "tests/test_fetch.py",  # 15 lines, 72s
        "tests/test_local_attacks.py",  # 15 lines, 78s
        "tests/test_add_window.py",  # 14 lines, 80s
        "tests/test_crash.py",  # 15 lines, 406s
    ),
    "packager/repo/repository.py": (
        "tests/test_version.py",  # 158 lines, 8s
        "tests/test_pkg.py",  # 74 lines, 11s
        "tests/test_deb_writer.py",  # 74 lines, 14s
        "tests/test_verify_download_dir.py",  # 164 lines, 17s
        "tests/test_msi.py",  # 74 lines, 18s
        "tests/test_gotuf_fixture.py",  # 232 lines, 26s
        "tests/test_linux_packages.py",  # 74 lines, 26s
        "tests/test_fetch_cli.py",  # 164 lines, 28s
        "tests/test_update_roots.py",  # 164 lines, 29s
        "tests/test_status.py",  # 186 lines, 31s
        "tests/test_archive_targets.py",  # 158 lines, 32s
        "tests/test_fetch_targets.py",  # 164 lines, 33s
        "tests/test_fetch_limits.py",  # 164 lines, 34s
        "tests/test_non_utc.py",  # 77 lines, 40s
        "tests/test_environment.py",  # 148 lines, 40s
        "tests/test_key_files.py",  # 178 lines, 41s
        "tests/test_gotuf_client.py",  # 262 lines, 48s
        "tests/test_verify.py",  # 184 lines, 51s
        "tests/test_errors.py",  # 199 lines, 51s
        "tests/test_repo_client.py",  # 270 lines, 71s
        "tests/test_fetch.py",  # 219 lines, 72s
        "tests/test_local_attacks.py",  # 164 lines, 78s
        "tests/test_add_window.py",  # 186 lines, 80s
        "tests/test_crash.py",  # 241 lines, 406s
    ),
    "packager/repo/status.py": (
        "tests/test_status.py",  # 33 lines, 31s
        "tests/test_non_utc.py",  # 29 lines, 40s
    ),
    "packager/repo/transaction.py": (
        "tests/test_version.py",  # 58 lines, 8s
        "tests/test_pkg.py",  # 58 lines, 11s
        "tests/test_deb_writer.py",  # 58 lines, 14s
        "tests/test_verify_download_dir.py",  # 63 lines, 17s
        "tests/test_msi.py",  # 58 lines, 18s
        "tests/test_gotuf_fixture.py",  # 69 lines, 26s
        "tests/test_linux_packages.py",  # 58 lines, 26s
        "tests/test_fetch_cli.py",  # 63 lines, 28s
        "tests/test_update_roots.py",  # 63 lines, 29s
        "tests/test_status.py",  # 64 lines, 31s
        "tests/test_archive_targets.py",  # 58 lines, 32s
        "tests/test_fetch_targets.py",  # 63 lines, 33s
        "tests/test_fetch_limits.py",  # 63 lines, 34s
        "tests/test_non_utc.py",  # 58 lines, 40s
        "tests/test_environment.py",  # 63 lines, 40s
        "tests/test_key_files.py",  # 64 lines, 41s
        "tests/test_gotuf_client.py",  # 69 lines, 48s
        "tests/test_verify.py",  # 63 lines, 51s
        "tests/test_errors.py",  # 63 lines, 51s
        "tests/test_repo_client.py",  # 69 lines, 71s
        "tests/test_fetch.py",  # 64 lines, 72s
        "tests/test_local_attacks.py",  # 63 lines, 78s
        "tests/test_add_window.py",  # 68 lines, 80s
        "tests/test_crash.py",  # 95 lines, 406s
    ),
    "packager/writers/__init__.py": (),
    "packager/writers/bom.py": (
        "tests/test_pkg.py",  # 73 lines, 11s
    ),
    "packager/writers/cab.py": (
        "tests/test_cab_writer.py",  # 82 lines, 8s
        "tests/test_msi.py",  # 75 lines, 18s
    ),
    "packager/writers/cfb.py": (
        "tests/test_cfb_writer.py",  # 131 lines, 7s
        "tests/test_msi.py",  # 122 lines, 18s
    ),
    "packager/writers/cksum.py": (
        "tests/test_pkg.py",  # 13 lines, 11s
    ),
    "packager/writers/cpio.py": (
        "tests/test_pkg.py",  # 40 lines, 11s
    ),
    "packager/writers/deb.py": (
        "tests/test_deb_writer.py",  # 101 lines, 14s
        "tests/test_linux_packages.py",  # 90 lines, 26s
        "tests/test_archive_targets.py",  # 89 lines, 32s
        "tests/test_non_utc.py",  # 90 lines, 40s
        "tests/test_environment.py",  # 75 lines, 40s
        "tests/test_local_attacks.py",  # 92 lines, 78s
    ),
    "packager/writers/msidb.py": (
        "tests/test_msi.py",  # 156 lines, 18s
    ),
    "packager/writers/xar.py": (
        "tests/test_pkg.py",  # 72 lines, 11s
    ),
    "templates/__init__.py": (),
}


def _templates() -> None:
    for prefix, module in TEMPLATE_PROXIES.items():
        for path in sorted((ROOT / prefix).glob("*.j2")):
            TESTS.setdefault(path.relative_to(ROOT).as_posix(), TESTS.get(module, ()))


_templates()

# Test files deliberately in no entry (checked by `python -m mutate`, which names any other).
UNMAPPED_ON_PURPOSE = frozenset({"tests/test_mutate_harness.py"})

# Mutants per file in a default run (`make mutate`), sampled by seed; 0 runs them all.
DEFAULT_CAP = 0

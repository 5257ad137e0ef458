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
# The bench smoke test runs the whole CLI for a minute and checks the harness, not the product.
EXCLUDED_TESTS = frozenset(
    {"tests/test_docker.py", "tests/test_msi_wine.py", "tests/test_bench_smoke.py"}
)

# Shared test code (conftest, helpers, fault injection): part of every cache key.
SUPPORT_FILES = tuple(
    sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tests").glob("*.py")
        if not p.name.startswith("test_")
    )
)

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
    "templates/linux/": "packager/formats/linux.py",
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
# * Files are ordered by how much of the module they run per second (the sharpest first): with
#   pytest -x, a mutant is killed by the cheapest test that can. The harness then moves the files
#   that killed a module's mutants to the front, and runs single tests quickest first.
# * Templates have no coverage of their own: each gets the tests of the module rendering it
#   (TEMPLATE_PROXIES), and per-test selection by the line of that module naming it.
TESTS: dict[str, tuple[str, ...]] = {
    "packager/fetch/__init__.py": (),
    "packager/fetch/cache.py": (
        "tests/test_version.py",  # 66 lines, 10s
        "tests/test_deb_writer.py",  # 66 lines, 11s
        "tests/test_environment.py",  # 70 lines, 18s
        "tests/test_pkg.py",  # 60 lines, 15s
        "tests/test_fetch_cli.py",  # 77 lines, 24s
        "tests/test_archive_targets.py",  # 66 lines, 21s
        "tests/test_verify_download_dir.py",  # 48 lines, 18s
        "tests/test_msi.py",  # 66 lines, 26s
        "tests/test_linux_packages.py",  # 66 lines, 41s
        "tests/test_fetch_limits.py",  # 64 lines, 42s
        "tests/test_fetch_targets.py",  # 66 lines, 45s
        "tests/test_fetch.py",  # 84 lines, 68s
        "tests/test_non_utc.py",  # 73 lines, 64s
        "tests/test_format_guards.py",  # 66 lines, 64s
        "tests/test_update_roots.py",  # 46 lines, 55s
        "tests/test_verify.py",  # 48 lines, 59s
        "tests/test_local_attacks.py",  # 84 lines, 112s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/fetch/client.py": (
        "tests/test_parallel_fetch.py",  # parallel downloads, cancellation
        "tests/test_version.py",  # 86 lines, 10s
        "tests/test_deb_writer.py",  # 86 lines, 11s
        "tests/test_verify_download_dir.py",  # 102 lines, 18s
        "tests/test_pkg.py",  # 85 lines, 15s
        "tests/test_environment.py",  # 90 lines, 18s
        "tests/test_fetch_cli.py",  # 121 lines, 24s
        "tests/test_archive_targets.py",  # 86 lines, 21s
        "tests/test_msi.py",  # 86 lines, 26s
        "tests/test_fetch_limits.py",  # 132 lines, 42s
        "tests/test_non_utc.py",  # 141 lines, 64s
        "tests/test_linux_packages.py",  # 86 lines, 41s
        "tests/test_verify.py",  # 121 lines, 59s
        "tests/test_fetch.py",  # 139 lines, 68s
        "tests/test_update_roots.py",  # 108 lines, 55s
        "tests/test_format_guards.py",  # 86 lines, 64s
        "tests/test_fetch_targets.py",  # 57 lines, 45s
        "tests/test_local_attacks.py",  # 111 lines, 112s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
        "tests/test_errors.py",  # the bounds and closing of what a failure reports
    ),
    "packager/fetch/workers.py": (
        "tests/test_parallel_fetch.py",  # overlap, failures, SIGINT, a library caller
        "tests/test_local_attacks.py",  # signals while a download stalls
        "tests/test_fetch_limits.py",
    ),
    "packager/fetch/extract.py": (
        "tests/test_extract.py",  # 282 lines, 5s
        "tests/test_pkg.py",  # 134 lines, 15s
        "tests/test_archive_targets.py",  # 176 lines, 21s
        "tests/test_fetch_targets.py",  # 218 lines, 45s
        "tests/test_linux_packages.py",  # 129 lines, 41s
        "tests/test_format_guards.py",  # 134 lines, 64s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/fetch/gotuf.py": (
        "tests/test_verify_download_dir.py",  # 40 lines, 18s
        "tests/test_version.py",  # 21 lines, 10s
        "tests/test_deb_writer.py",  # 21 lines, 11s
        "tests/test_pkg.py",  # 21 lines, 15s
        "tests/test_environment.py",  # 21 lines, 18s
        "tests/test_non_utc.py",  # 68 lines, 64s
        "tests/test_archive_targets.py",  # 21 lines, 21s
        "tests/test_fetch_limits.py",  # 40 lines, 42s
        "tests/test_fetch_cli.py",  # 21 lines, 24s
        "tests/test_msi.py",  # 21 lines, 26s
        "tests/test_update_roots.py",  # 42 lines, 55s
        "tests/test_fetch.py",  # 49 lines, 68s
        "tests/test_verify.py",  # 40 lines, 59s
        "tests/test_linux_packages.py",  # 21 lines, 41s
        "tests/test_fetch_targets.py",  # 21 lines, 45s
        "tests/test_format_guards.py",  # 21 lines, 64s
        "tests/test_local_attacks.py",  # 21 lines, 112s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/fetch/http.py": (
        "tests/test_parallel_fetch.py",  # cancellation of bodies in flight
        "tests/test_message_bounds.py",  # boundaries of shortened values, 1s
        "tests/test_version.py",  # 98 lines, 10s
        "tests/test_deb_writer.py",  # 97 lines, 11s
        "tests/test_pkg.py",  # 97 lines, 15s
        "tests/test_environment.py",  # 98 lines, 18s
        "tests/test_verify_download_dir.py",  # 92 lines, 18s
        "tests/test_archive_targets.py",  # 98 lines, 21s
        "tests/test_fetch_cli.py",  # 93 lines, 24s
        "tests/test_fetch_limits.py",  # 163 lines, 42s
        "tests/test_msi.py",  # 97 lines, 26s
        "tests/test_linux_packages.py",  # 97 lines, 41s
        "tests/test_fetch_targets.py",  # 90 lines, 45s
        "tests/test_verify.py",  # 114 lines, 59s
        "tests/test_fetch.py",  # 122 lines, 68s
        "tests/test_layout.py",  # 8 lines, 4s
        "tests/test_update_roots.py",  # 92 lines, 55s
        "tests/test_format_guards.py",  # 99 lines, 64s
        "tests/test_non_utc.py",  # 98 lines, 64s
        "tests/test_local_attacks.py",  # 102 lines, 112s
        "tests/test_env_file_property.py",  # 8 lines, 20s
        "tests/test_gotuf_fixture.py",  # 10 lines, 32s
        "tests/test_status.py",  # 10 lines, 37s
        "tests/test_key_files.py",  # 10 lines, 44s
        "tests/test_gotuf_client.py",  # 10 lines, 55s
        "tests/test_add_window.py",  # 10 lines, 57s
        "tests/test_errors.py",  # 10 lines, 57s
        "tests/test_repo_client.py",  # 10 lines, 104s
        "tests/test_crash.py",  # 10 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/fetch/binary_names.py": (
        "tests/test_binary_memory.py",  # every table compared with the installed lief's enums
    ),
    "packager/fetch/inspect.py": (
        "tests/test_binary_memory.py",  # header reader vs lief, bounded memory
        "tests/test_windows_binaries.py",  # 19 lines, 10s
        "tests/test_version.py",  # 15 lines, 10s
        "tests/test_deb_writer.py",  # 15 lines, 11s
        "tests/test_pkg.py",  # 16 lines, 15s
        "tests/test_msi.py",  # 25 lines, 26s
        "tests/test_environment.py",  # 15 lines, 18s
        "tests/test_fetch_targets.py",  # 37 lines, 45s
        "tests/test_archive_targets.py",  # 15 lines, 21s
        "tests/test_fetch_cli.py",  # 17 lines, 24s
        "tests/test_format_guards.py",  # 33 lines, 64s
        "tests/test_layout.py",  # 2 lines, 4s
        "tests/test_linux_packages.py",  # 15 lines, 41s
        "tests/test_non_utc.py",  # 17 lines, 64s
        "tests/test_local_attacks.py",  # 17 lines, 112s
        "tests/test_verify_download_dir.py",  # 2 lines, 18s
        "tests/test_env_file_property.py",  # 2 lines, 20s
        "tests/test_gotuf_fixture.py",  # 2 lines, 32s
        "tests/test_status.py",  # 2 lines, 37s
        "tests/test_fetch_limits.py",  # 2 lines, 42s
        "tests/test_key_files.py",  # 2 lines, 44s
        "tests/test_gotuf_client.py",  # 2 lines, 55s
        "tests/test_update_roots.py",  # 2 lines, 55s
        "tests/test_add_window.py",  # 2 lines, 57s
        "tests/test_errors.py",  # 2 lines, 57s
        "tests/test_verify.py",  # 2 lines, 59s
        "tests/test_fetch.py",  # 2 lines, 68s
        "tests/test_repo_client.py",  # 2 lines, 104s
        "tests/test_crash.py",  # 2 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/fetch/progress.py": (
        "tests/test_parallel_fetch.py",  # bars from worker threads
        "tests/test_fetch_cli.py",  # 20 lines, 24s
        "tests/test_version.py",  # 5 lines, 10s
        "tests/test_deb_writer.py",  # 5 lines, 11s
        "tests/test_pkg.py",  # 5 lines, 15s
        "tests/test_environment.py",  # 5 lines, 18s
        "tests/test_verify_download_dir.py",  # 5 lines, 18s
        "tests/test_archive_targets.py",  # 5 lines, 21s
        "tests/test_msi.py",  # 5 lines, 26s
        "tests/test_linux_packages.py",  # 5 lines, 41s
        "tests/test_fetch_limits.py",  # 5 lines, 42s
        "tests/test_update_roots.py",  # 5 lines, 55s
        "tests/test_verify.py",  # 5 lines, 59s
        "tests/test_format_guards.py",  # 5 lines, 64s
        "tests/test_non_utc.py",  # 5 lines, 64s
        "tests/test_local_attacks.py",  # 5 lines, 112s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/fetch/targets.py": (
        "tests/test_parallel_fetch.py",  # parallel downloads, one request each
        "tests/test_message_bounds.py",  # boundaries of shortened values, 1s
        "tests/test_version.py",  # 73 lines, 10s
        "tests/test_deb_writer.py",  # 44 lines, 11s
        "tests/test_pkg.py",  # 46 lines, 15s
        "tests/test_archive_targets.py",  # 60 lines, 21s
        "tests/test_fetch_cli.py",  # 66 lines, 24s
        "tests/test_environment.py",  # 41 lines, 18s
        "tests/test_msi.py",  # 49 lines, 26s
        "tests/test_linux_packages.py",  # 48 lines, 41s
        "tests/test_fetch_targets.py",  # 51 lines, 45s
        "tests/test_non_utc.py",  # 60 lines, 64s
        "tests/test_format_guards.py",  # 56 lines, 64s
        "tests/test_fetch_limits.py",  # 30 lines, 42s
        "tests/test_local_attacks.py",  # 60 lines, 112s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
        "tests/test_build_matrix.py",  # matrix builds from one fetch, 27s
    ),
    "packager/fetch/published.py": ("tests/test_status_url.py",),
    "packager/fetch/verify.py": (
        "tests/test_message_bounds.py",  # boundaries of shortened values, 1s
        "tests/test_verify_download_dir.py",  # 94 lines, 18s
        "tests/test_verify.py",  # 83 lines, 59s
        "tests/test_fetch_limits.py",  # 29 lines, 42s
        "tests/test_update_roots.py",  # 36 lines, 55s
        "tests/test_non_utc.py",  # 39 lines, 64s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/formats/__init__.py": (),
    "packager/formats/base.py": (
        "tests/test_deb_writer.py",  # 4 lines, 11s
        "tests/test_pkg.py",  # 5 lines, 15s
        "tests/test_archive_targets.py",  # 5 lines, 21s
        "tests/test_environment.py",  # 4 lines, 18s
        "tests/test_format_guards.py",  # 10 lines, 64s
        "tests/test_linux_packages.py",  # 5 lines, 41s
        "tests/test_non_utc.py",  # 5 lines, 64s
        "tests/test_local_attacks.py",  # 4 lines, 112s
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/formats/linux.py": (
        "tests/test_templates_golden.py",  # renders every template against committed golden files
        "tests/test_deb_writer.py",  # 81 lines, 11s
        "tests/test_environment.py",  # 78 lines, 18s
        "tests/test_archive_targets.py",  # 87 lines, 21s
        "tests/test_linux_packages.py",  # 87 lines, 41s
        "tests/test_format_guards.py",  # 85 lines, 64s
        "tests/test_non_utc.py",  # 83 lines, 64s
        "tests/test_local_attacks.py",  # 81 lines, 112s
        "tests/test_version.py",  # 4 lines, 10s
        "tests/test_env_file_property.py",  # 5 lines, 20s
        "tests/test_fetch_limits.py",  # 4 lines, 42s
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/formats/msi.py": (
        "tests/test_msi.py",  # 141 lines, 26s
        "tests/test_format_guards.py",  # 141 lines, 64s
        "tests/test_version.py",  # 1 lines, 10s
        "tests/test_deb_writer.py",  # 1 lines, 11s
        "tests/test_pkg.py",  # 1 lines, 15s
        "tests/test_environment.py",  # 1 lines, 18s
        "tests/test_verify_download_dir.py",  # 1 lines, 18s
        "tests/test_archive_targets.py",  # 1 lines, 21s
        "tests/test_fetch_cli.py",  # 1 lines, 24s
        "tests/test_gotuf_fixture.py",  # 1 lines, 32s
        "tests/test_status.py",  # 1 lines, 37s
        "tests/test_linux_packages.py",  # 1 lines, 41s
        "tests/test_fetch_limits.py",  # 1 lines, 42s
        "tests/test_key_files.py",  # 1 lines, 44s
        "tests/test_gotuf_client.py",  # 1 lines, 55s
        "tests/test_update_roots.py",  # 1 lines, 55s
        "tests/test_add_window.py",  # 1 lines, 57s
        "tests/test_errors.py",  # 1 lines, 57s
        "tests/test_verify.py",  # 1 lines, 59s
        "tests/test_non_utc.py",  # 1 lines, 64s
        "tests/test_fetch.py",  # 1 lines, 68s
        "tests/test_repo_client.py",  # 1 lines, 104s
        "tests/test_local_attacks.py",  # 1 lines, 112s
        "tests/test_crash.py",  # 1 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/formats/pkg.py": (
        "tests/test_pkg.py",  # 44 lines, 15s
        "tests/test_format_guards.py",  # 36 lines, 64s
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/layout.py": (
        "tests/test_deb_writer.py",  # 39 lines, 11s
        "tests/test_environment.py",  # 38 lines, 18s
        "tests/test_archive_targets.py",  # 40 lines, 21s
        "tests/test_pkg.py",  # 24 lines, 15s
        "tests/test_linux_packages.py",  # 40 lines, 41s
        "tests/test_msi.py",  # 23 lines, 26s
        "tests/test_format_guards.py",  # 47 lines, 64s
        "tests/test_non_utc.py",  # 39 lines, 64s
        "tests/test_local_attacks.py",  # 39 lines, 112s
    ),
    "packager/options.py": (
        "tests/test_build_matrix.py",  # matrix files reach every BuildRequest rule, 25s
        "tests/test_fleetctl_flags.py",  # Go syntax, host:port URLs, via the CLI, 15s
        "tests/test_templates_golden.py",  # renders every template against committed golden files
        "tests/test_durations.py",  # go_duration against Go's own Duration.String, 2s
        "tests/test_deb_writer.py",  # 73 lines, 11s
        "tests/test_version.py",  # 58 lines, 10s
        "tests/test_pkg.py",  # 70 lines, 15s
        "tests/test_environment.py",  # 70 lines, 18s
        "tests/test_env_file_property.py",  # 70 lines, 20s
        "tests/test_archive_targets.py",  # 70 lines, 21s
        "tests/test_msi.py",  # 79 lines, 26s
        "tests/test_linux_packages.py",  # 88 lines, 41s
        "tests/test_format_guards.py",  # 118 lines, 64s
        "tests/test_fetch_limits.py",  # 54 lines, 42s
        "tests/test_non_utc.py",  # 70 lines, 64s
        "tests/test_local_attacks.py",  # 73 lines, 112s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/render.py": (
        "tests/test_templates_golden.py",  # every template against its reviewed rendering, 2s
        "tests/test_deb_writer.py",  # 11 lines, 11s
        "tests/test_environment.py",  # 11 lines, 18s
        "tests/test_pkg.py",  # 9 lines, 15s
        "tests/test_env_file_property.py",  # 11 lines, 20s
        "tests/test_archive_targets.py",  # 11 lines, 21s
        "tests/test_linux_packages.py",  # 11 lines, 41s
        "tests/test_format_guards.py",  # 12 lines, 64s
        "tests/test_non_utc.py",  # 11 lines, 64s
        "tests/test_local_attacks.py",  # 11 lines, 112s
    ),
    "packager/repo/__init__.py": (),
    "packager/repo/durations.py": (
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_durations.py",  # the parser's own unit tests, 1s
        "tests/test_version.py",  # 10 lines, 10s
        "tests/test_deb_writer.py",  # 10 lines, 11s
        "tests/test_pkg.py",  # 10 lines, 15s
        "tests/test_status.py",  # 22 lines, 37s
        "tests/test_environment.py",  # 10 lines, 18s
        "tests/test_verify_download_dir.py",  # 10 lines, 18s
        "tests/test_archive_targets.py",  # 10 lines, 21s
        "tests/test_fetch_cli.py",  # 10 lines, 24s
        "tests/test_msi.py",  # 10 lines, 26s
        "tests/test_gotuf_fixture.py",  # 10 lines, 32s
        "tests/test_fetch_limits.py",  # 12 lines, 42s
        "tests/test_non_utc.py",  # 18 lines, 64s
        "tests/test_linux_packages.py",  # 10 lines, 41s
        "tests/test_key_files.py",  # 10 lines, 44s
        "tests/test_errors.py",  # 12 lines, 57s
        "tests/test_gotuf_client.py",  # 10 lines, 55s
        "tests/test_update_roots.py",  # 10 lines, 55s
        "tests/test_add_window.py",  # 10 lines, 57s
        "tests/test_format_guards.py",  # 11 lines, 64s
        "tests/test_verify.py",  # 10 lines, 59s
        "tests/test_fetch.py",  # 10 lines, 68s
        "tests/test_repo_client.py",  # 10 lines, 104s
        "tests/test_local_attacks.py",  # 10 lines, 112s
        "tests/test_crash.py",  # 10 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/fsutil.py": (
        "tests/test_parallel_keys.py",  # copies hashed in one pass
        "tests/test_many_installers.py",  # place_private_file: each installer's size and sha256
        "tests/test_repo_files.py",  # metadata bytes and target names, 3s
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_version.py",  # 56 lines, 10s
        "tests/test_deb_writer.py",  # 58 lines, 11s
        "tests/test_pkg.py",  # 58 lines, 15s
        "tests/test_archive_targets.py",  # 73 lines, 21s
        "tests/test_verify_download_dir.py",  # 47 lines, 18s
        "tests/test_fetch_cli.py",  # 56 lines, 24s
        "tests/test_environment.py",  # 41 lines, 18s
        "tests/test_msi.py",  # 58 lines, 26s
        "tests/test_gotuf_fixture.py",  # 54 lines, 32s
        "tests/test_linux_packages.py",  # 58 lines, 41s
        "tests/test_fetch_limits.py",  # 56 lines, 42s
        "tests/test_fetch_targets.py",  # 56 lines, 45s
        "tests/test_gotuf_client.py",  # 54 lines, 55s
        "tests/test_add_window.py",  # 53 lines, 57s
        "tests/test_format_guards.py",  # 58 lines, 64s
        "tests/test_non_utc.py",  # 58 lines, 64s
        "tests/test_status.py",  # 32 lines, 37s
        "tests/test_update_roots.py",  # 47 lines, 55s
        "tests/test_fetch.py",  # 56 lines, 68s
        "tests/test_local_attacks.py",  # 93 lines, 112s
        "tests/test_errors.py",  # 47 lines, 57s
        "tests/test_verify.py",  # 47 lines, 59s
        "tests/test_key_files.py",  # 32 lines, 44s
        "tests/test_repo_client.py",  # 54 lines, 104s
        "tests/test_crash.py",  # 57 lines, 273s
        "tests/test_crash_points.py",  # 1 lines, 66s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/keys.py": (
        "tests/test_parallel_keys.py",  # derivations at once
        "tests/test_repo_files.py",  # metadata bytes and target names, 3s
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_keys.py",  # 58 lines, 3s
        "tests/test_version.py",  # 43 lines, 10s
        "tests/test_deb_writer.py",  # 43 lines, 11s
        "tests/test_environment.py",  # 70 lines, 18s
        "tests/test_verify_download_dir.py",  # 61 lines, 18s
        "tests/test_pkg.py",  # 43 lines, 15s
        "tests/test_fetch_cli.py",  # 61 lines, 24s
        "tests/test_gotuf_fixture.py",  # 69 lines, 32s
        "tests/test_archive_targets.py",  # 43 lines, 21s
        "tests/test_key_files.py",  # 77 lines, 44s
        "tests/test_status.py",  # 61 lines, 37s
        "tests/test_msi.py",  # 43 lines, 26s
        "tests/test_fetch_limits.py",  # 61 lines, 42s
        "tests/test_fetch_targets.py",  # 61 lines, 45s
        "tests/test_errors.py",  # 71 lines, 57s
        "tests/test_gotuf_client.py",  # 61 lines, 55s
        "tests/test_update_roots.py",  # 61 lines, 55s
        "tests/test_add_window.py",  # 61 lines, 57s
        "tests/test_linux_packages.py",  # 43 lines, 41s
        "tests/test_verify.py",  # 61 lines, 59s
        "tests/test_fetch.py",  # 61 lines, 68s
        "tests/test_non_utc.py",  # 49 lines, 64s
        "tests/test_format_guards.py",  # 43 lines, 64s
        "tests/test_crash_points.py",  # 40 lines, 66s
        "tests/test_repo_client.py",  # 61 lines, 104s
        "tests/test_local_attacks.py",  # 61 lines, 112s
        "tests/test_crash.py",  # 61 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/metadata.py": (
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_hsm.py",  # sign(): a token's own error, not python-tuf's wrapper
        "tests/test_repo_files.py",  # published bytes and target names, 2s
        "tests/test_version.py",  # 22 lines, 10s
        "tests/test_deb_writer.py",  # 22 lines, 11s
        "tests/test_pkg.py",  # 22 lines, 15s
        "tests/test_environment.py",  # 22 lines, 18s
        "tests/test_verify_download_dir.py",  # 21 lines, 18s
        "tests/test_archive_targets.py",  # 22 lines, 21s
        "tests/test_fetch_cli.py",  # 21 lines, 24s
        "tests/test_keys.py",  # 3 lines, 3s
        "tests/test_msi.py",  # 22 lines, 26s
        "tests/test_status.py",  # 27 lines, 37s
        "tests/test_gotuf_fixture.py",  # 22 lines, 32s
        "tests/test_linux_packages.py",  # 22 lines, 41s
        "tests/test_fetch_limits.py",  # 21 lines, 42s
        "tests/test_key_files.py",  # 21 lines, 44s
        "tests/test_fetch_targets.py",  # 21 lines, 45s
        "tests/test_non_utc.py",  # 27 lines, 64s
        "tests/test_errors.py",  # 23 lines, 57s
        "tests/test_gotuf_client.py",  # 22 lines, 55s
        "tests/test_update_roots.py",  # 21 lines, 55s
        "tests/test_verify.py",  # 22 lines, 59s
        "tests/test_add_window.py",  # 21 lines, 57s
        "tests/test_format_guards.py",  # 22 lines, 64s
        "tests/test_fetch.py",  # 23 lines, 68s
        "tests/test_repo_client.py",  # 22 lines, 104s
        "tests/test_local_attacks.py",  # 21 lines, 112s
        "tests/test_crash.py",  # 22 lines, 273s
        "tests/test_crash_points.py",  # 3 lines, 66s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/naming.py": (
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_templates_golden.py",  # renders every template against committed golden files
        "tests/test_repo_files.py",  # published bytes and target names, 2s
        "tests/test_version.py",  # 14 lines, 10s
        "tests/test_verify_download_dir.py",  # 14 lines, 18s
        "tests/test_gotuf_fixture.py",  # 19 lines, 32s
        "tests/test_fetch_cli.py",  # 14 lines, 24s
        "tests/test_archive_targets.py",  # 12 lines, 21s
        "tests/test_deb_writer.py",  # 4 lines, 11s
        "tests/test_errors.py",  # 21 lines, 57s
        "tests/test_gotuf_client.py",  # 20 lines, 55s
        "tests/test_fetch_targets.py",  # 16 lines, 45s
        "tests/test_fetch_limits.py",  # 14 lines, 42s
        "tests/test_key_files.py",  # 14 lines, 44s
        "tests/test_pkg.py",  # 4 lines, 15s
        "tests/test_update_roots.py",  # 14 lines, 55s
        "tests/test_verify.py",  # 15 lines, 59s
        "tests/test_add_window.py",  # 14 lines, 57s
        "tests/test_repo_client.py",  # 24 lines, 104s
        "tests/test_environment.py",  # 4 lines, 18s
        "tests/test_fetch.py",  # 14 lines, 68s
        "tests/test_env_file_property.py",  # 4 lines, 20s
        "tests/test_msi.py",  # 4 lines, 26s
        "tests/test_local_attacks.py",  # 14 lines, 112s
        "tests/test_linux_packages.py",  # 4 lines, 41s
        "tests/test_format_guards.py",  # 4 lines, 64s
        "tests/test_non_utc.py",  # 4 lines, 64s
        "tests/test_crash.py",  # 14 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/passphrase.py": (
        "tests/test_parallel_keys.py",  # which passphrases are derived ahead, and when
        "tests/test_repo_files.py",  # metadata bytes and target names, 3s
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_environment.py",  # 32 lines, 18s
        "tests/test_version.py",  # 14 lines, 10s
        "tests/test_deb_writer.py",  # 14 lines, 11s
        "tests/test_pkg.py",  # 14 lines, 15s
        "tests/test_verify_download_dir.py",  # 15 lines, 18s
        "tests/test_archive_targets.py",  # 15 lines, 21s
        "tests/test_fetch_cli.py",  # 15 lines, 24s
        "tests/test_errors.py",  # 35 lines, 57s
        "tests/test_msi.py",  # 14 lines, 26s
        "tests/test_gotuf_fixture.py",  # 15 lines, 32s
        "tests/test_status.py",  # 15 lines, 37s
        "tests/test_fetch_limits.py",  # 15 lines, 42s
        "tests/test_linux_packages.py",  # 14 lines, 41s
        "tests/test_key_files.py",  # 15 lines, 44s
        "tests/test_fetch_targets.py",  # 15 lines, 45s
        "tests/test_gotuf_client.py",  # 15 lines, 55s
        "tests/test_update_roots.py",  # 15 lines, 55s
        "tests/test_verify.py",  # 15 lines, 59s
        "tests/test_add_window.py",  # 14 lines, 57s
        "tests/test_fetch.py",  # 15 lines, 68s
        "tests/test_format_guards.py",  # 14 lines, 64s
        "tests/test_non_utc.py",  # 14 lines, 64s
        "tests/test_repo_client.py",  # 15 lines, 104s
        "tests/test_local_attacks.py",  # 15 lines, 112s
        "tests/test_crash.py",  # 15 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/repository.py": (
        "tests/test_parallel_keys.py",  # derivations at once, passphrase errors
        "tests/test_repo_files.py",  # metadata bytes and target names, 3s
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_version.py",  # 158 lines, 10s
        "tests/test_verify_download_dir.py",  # 164 lines, 18s
        "tests/test_environment.py",  # 152 lines, 18s
        "tests/test_deb_writer.py",  # 81 lines, 11s
        "tests/test_archive_targets.py",  # 158 lines, 21s
        "tests/test_gotuf_fixture.py",  # 229 lines, 32s
        "tests/test_fetch_cli.py",  # 164 lines, 24s
        "tests/test_pkg.py",  # 81 lines, 15s
        "tests/test_status.py",  # 188 lines, 37s
        "tests/test_gotuf_client.py",  # 257 lines, 55s
        "tests/test_key_files.py",  # 179 lines, 44s
        "tests/test_fetch_limits.py",  # 164 lines, 42s
        "tests/test_fetch_targets.py",  # 164 lines, 45s
        "tests/test_errors.py",  # 199 lines, 57s
        "tests/test_add_window.py",  # 183 lines, 57s
        "tests/test_fetch.py",  # 217 lines, 68s
        "tests/test_verify.py",  # 184 lines, 59s
        "tests/test_msi.py",  # 81 lines, 26s
        "tests/test_update_roots.py",  # 164 lines, 55s
        "tests/test_repo_client.py",  # 264 lines, 104s
        "tests/test_linux_packages.py",  # 81 lines, 41s
        "tests/test_local_attacks.py",  # 164 lines, 112s
        "tests/test_non_utc.py",  # 84 lines, 64s
        "tests/test_format_guards.py",  # 81 lines, 64s
        "tests/test_crash.py",  # 236 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
        "tests/test_timestamp_if_expiring.py",  # timestamp's decision (issue 16)
    ),
    "packager/repo/publish.py": (
        "tests/test_publish.py",  # order, interruption at every upload, refusals, 2 min
        "tests/test_publish_s3.py",  # a real S3 API server, 40s
    ),
    "packager/repo/stores.py": (
        "tests/test_publish.py",
        "tests/test_publish_s3.py",
    ),
    "packager/repo/hsm.py": (
        "tests/test_hsm.py",  # a SoftHSM2 token per test, go-tuf verifies, 10s
        "tests/test_ceremony_hsm.py",
    ),
    "packager/repo/signing.py": (
        "tests/test_ceremony.py",  # holders' key files, 2 min
        "tests/test_ceremony_hsm.py",
        "tests/test_keys.py",
    ),
    "packager/repo/ceremony.py": (
        "tests/test_ceremony.py",
        "tests/test_ceremony_hsm.py",
    ),
    "packager/repo/status.py": (
        "tests/test_status_url.py",  # the published side, 20s
        "tests/test_status_rules.py",  # verdicts at their boundaries, 3s
        "tests/test_status.py",  # 33 lines, 37s
        "tests/test_non_utc.py",  # 29 lines, 64s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/repo/transaction.py": (
        "tests/test_repo_files.py",  # metadata bytes and target names, 3s
        "tests/test_status_rules.py",  # status over real repositories, 8s
        "tests/test_version.py",  # 66 lines, 10s
        "tests/test_deb_writer.py",  # 66 lines, 11s
        "tests/test_pkg.py",  # 66 lines, 15s
        "tests/test_environment.py",  # 71 lines, 18s
        "tests/test_verify_download_dir.py",  # 71 lines, 18s
        "tests/test_archive_targets.py",  # 66 lines, 21s
        "tests/test_fetch_cli.py",  # 71 lines, 24s
        "tests/test_msi.py",  # 66 lines, 26s
        "tests/test_gotuf_fixture.py",  # 77 lines, 32s
        "tests/test_status.py",  # 72 lines, 37s
        "tests/test_fetch_limits.py",  # 71 lines, 42s
        "tests/test_linux_packages.py",  # 66 lines, 41s
        "tests/test_key_files.py",  # 72 lines, 44s
        "tests/test_fetch_targets.py",  # 71 lines, 45s
        "tests/test_gotuf_client.py",  # 77 lines, 55s
        "tests/test_add_window.py",  # 76 lines, 57s
        "tests/test_update_roots.py",  # 71 lines, 55s
        "tests/test_errors.py",  # 71 lines, 57s
        "tests/test_verify.py",  # 71 lines, 59s
        "tests/test_fetch.py",  # 72 lines, 68s
        "tests/test_format_guards.py",  # 66 lines, 64s
        "tests/test_non_utc.py",  # 66 lines, 64s
        "tests/test_repo_client.py",  # 77 lines, 104s
        "tests/test_local_attacks.py",  # 71 lines, 112s
        "tests/test_crash.py",  # 105 lines, 273s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/writers/__init__.py": (),
    "packager/writers/bom.py": (
        "tests/test_pkg.py",  # 73 lines, 15s
        "tests/test_format_guards.py",  # 66 lines, 64s
    ),
    "packager/writers/cab.py": (
        "tests/test_cab_writer.py",  # 82 lines, 5s
        "tests/test_msi.py",  # 75 lines, 26s
        "tests/test_format_guards.py",  # 75 lines, 64s
    ),
    "packager/writers/cfb.py": (
        "tests/test_cfb_writer.py",  # 131 lines, 7s
        "tests/test_msi.py",  # 122 lines, 26s
        "tests/test_format_guards.py",  # 122 lines, 64s
    ),
    "packager/writers/cksum.py": (
        "tests/test_pkg.py",  # 13 lines, 15s
        "tests/test_format_guards.py",  # 13 lines, 64s
    ),
    "packager/writers/cpio.py": (
        "tests/test_pkg.py",  # 40 lines, 15s
        "tests/test_format_guards.py",  # 40 lines, 64s
    ),
    "packager/writers/deb.py": (
        "tests/test_deb_writer.py",  # 103 lines, 11s
        "tests/test_archive_targets.py",  # 91 lines, 21s
        "tests/test_environment.py",  # 73 lines, 18s
        "tests/test_linux_packages.py",  # 90 lines, 41s
        "tests/test_format_guards.py",  # 91 lines, 64s
        "tests/test_non_utc.py",  # 90 lines, 64s
        "tests/test_local_attacks.py",  # 92 lines, 112s
    ),
    "packager/writers/archpkg.py": (
        "tests/test_linux_packages.py",  # bsdtar listing, .MTREE, .INSTALL under dash, pacman -U/-R
        "tests/test_many_installers.py",  # types from one fetch, same bytes, 29s
    ),
    "packager/writers/parallel.py": (
        "tests/test_writer_speed_invariants.py",  # same bytes on 1 and n workers, zlib reads back
        "tests/test_rpm_payload.py",  # the rpm payload, read back by rpm2cpio and rpm -K
        "tests/test_deb_writer.py",  # the deb's data.tar.gz
        "tests/test_linux_packages.py",  # reproducible builds, dpkg and rpm read them
    ),
    "packager/writers/rpm.py": (
        "tests/test_rpm_payload.py",  # rpm -K, rpm2cpio, --dump, malformed nfpm output, 3s
        "tests/test_linux_packages.py",  # rpm -qip/-qlvp/--scripts, rpm -i --root, rpmlint, 41s
        "tests/test_inspect.py",  # inspect reads rpms with its read_header
    ),
    "packager/writers/tarblocks.py": (
        "tests/test_deb_writer.py",  # the deb finisher's tar filter, 11s
        "tests/test_linux_packages.py",  # the Arch finisher's, 41s
    ),
    "packager/writers/msidb.py": (
        "tests/test_msi.py",  # 156 lines, 26s
        "tests/test_format_guards.py",  # 152 lines, 64s
        "tests/test_fetch_guards.py",  # added from coverage (derive_map at e072c1c)
    ),
    "packager/writers/xar.py": (
        "tests/test_pkg.py",  # 72 lines, 15s
        "tests/test_format_guards.py",  # 72 lines, 64s
    ),
    "templates/__init__.py": (),
}


# Reviewed: the test files written for a module run before the rest of its entry (they are the
# ones that should kill its mutants; the derived order only knows lines per second).
FIRST: dict[str, tuple[str, ...]] = {
    "packager/repo/keys.py": ("tests/test_key_files.py", "tests/test_keys.py"),
    "packager/repo/passphrase.py": ("tests/test_parallel_keys.py",),
    "packager/repo/transaction.py": ("tests/test_crash_points.py",),
    "packager/repo/fsutil.py": ("tests/test_crash_points.py", "tests/test_local_attacks.py"),
    "packager/repo/repository.py": ("tests/test_crash_points.py", "tests/test_update_roots.py"),
    "packager/repo/status.py": ("tests/test_status.py",),
    "packager/options.py": ("tests/test_format_guards.py",),
    "packager/layout.py": ("tests/test_format_guards.py", "tests/test_layout.py"),
    "packager/render.py": ("tests/test_templates_golden.py", "tests/test_env_file_property.py"),
    "packager/formats/linux.py": ("tests/test_format_guards.py", "tests/test_linux_packages.py"),
    "packager/formats/pkg.py": ("tests/test_pkg.py", "tests/test_format_guards.py"),
    "packager/formats/msi.py": ("tests/test_msi.py", "tests/test_format_guards.py"),
    "packager/fetch/extract.py": ("tests/test_extract.py", "tests/test_archive_targets.py"),
    "packager/fetch/http.py": ("tests/test_fetch_guards.py", "tests/test_fetch_limits.py"),
    "packager/fetch/verify.py": ("tests/test_verify.py", "tests/test_verify_download_dir.py"),
    "packager/fetch/targets.py": ("tests/test_fetch_targets.py",),
    "packager/fetch/cache.py": ("tests/test_fetch_guards.py", "tests/test_fetch.py"),
    "packager/fetch/client.py": ("tests/test_fetch_guards.py", "tests/test_fetch.py"),
}


# Reviewed: tests whose work runs only in child processes killed with SIGKILL (no coverage data
# is ever written), so coverage never selects them; they run for every mutant of these modules.
_INIT_CRASH = "tests/test_crash_points.py::test_init_killed_anywhere_can_be_run_again"
# And the plain-checkout test: it imports the renderer in a child interpreter (not measured).
_PLAIN_CHECKOUT = "tests/test_templates_golden.py::test_templates_found_from_a_plain_checkout"
# The commit-point sweeps kill and trace their commands in children too: the cc921a5 run never
# selected them for transaction.py, and three roll-forward mutants survived that they kill.
_KILL_AT_RENAMES = "tests/test_crash_points.py::test_kill_at_every_rename"
_DURABLE_DIRS = "tests/test_crash_points.py::test_new_directories_are_durable"
BLIND: dict[str, tuple[str, ...]] = {
    "packager/repo/transaction.py": (_INIT_CRASH, _KILL_AT_RENAMES, _DURABLE_DIRS),
    "packager/repo/repository.py": (_INIT_CRASH,),
    "packager/render.py": (_PLAIN_CHECKOUT,),
}


GOLDEN_TESTS = "tests/test_templates_golden.py"


def _reviewed() -> None:
    for module, first in FIRST.items():
        rest = TESTS.get(module, ())
        TESTS[module] = (*(t for t in first if t in rest), *(t for t in rest if t not in first))
    for prefix, module in TEMPLATE_PROXIES.items():
        for path in sorted((ROOT / prefix).glob("*.j2")):
            # Every template's rendering is compared with a reviewed copy: that file first.
            TESTS.setdefault(
                path.relative_to(ROOT).as_posix(), (GOLDEN_TESTS, *TESTS.get(module, ()))
            )


_reviewed()

# Test files deliberately in no entry (checked by `python -m mutate`, which names any other).
# The inspect tests exercise packager/installers/, which is not a mutation group yet (but
# test_inspect.py reads rpms with writers/rpm.py's header reader: mapped there).
UNMAPPED_ON_PURPOSE = frozenset(
    {
        "tests/test_mutate_harness.py",
        "tests/test_distribution.py",  # pyproject.toml's package list: no mutated module
        "tests/test_inspect_pkg.py",
        "tests/test_inspect_msi.py",
        "tests/test_examples.py",  # the examples/ files: no mutated module behind them
    }
)

# A default run (`make mutate`): mutants per file, sampled by seed (0: all of them), and tests
# per mutant, sharpest first (0: every selected test).
DEFAULT_CAP = 6
DEFAULT_MAX_TESTS = 25
DEFAULT_ESCALATE_SECONDS = 240.0  # per surviving mutant, beyond its first DEFAULT_MAX_TESTS

"""Every template rendered as the builders render it, compared byte for byte with reviewed copies
in tests/golden/. The maintainer scripts, unit, env file and pkg metadata are what real machines
execute and parse: a dropped line, a lost trailing newline or stray blank lines (Jinja's
``trim_blocks``/``keep_trailing_newline``) change them, and the behavioural tests cannot notice
every such change.

After an intended template change: ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_templates_golden.py``
rewrites the copies; review ``git diff tests/golden`` before committing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from packager.formats.linux import orbit_env
from packager.options import BuildRequest
from packager.render import render, render_xml

GOLDEN = Path(__file__).parent / "golden"
ORBIT_ROOT = "/opt/orbit"
SYSTEM_DIRS = ["/etc/default", "/usr/lib/systemd/system", "/usr/local/bin", "/var/log"]

REQUEST = BuildRequest(
    type="deb",
    fleet_url="https://fleet.example.com",
    enroll_secret='s3cr"et $x `y` \\z',
    fleet_desktop=True,
    enable_scripts=True,
    end_user_email="it@example.com",
    fleet_managed_host_identity_certificate=True,
)


def _linux_script(name: str, fmt: str, service: bool) -> Callable[[], str]:
    return lambda: render(
        "linux",
        f"{name}.sh.j2",
        format=fmt,
        service=service,
        orbit_root=ORBIT_ROOT,
        system_dirs=SYSTEM_DIRS,
    )


CASES: dict[str, Callable[[], str]] = {
    "linux/orbit.env": lambda: render(
        "linux", "orbit.env.j2", env=orbit_env(REQUEST), tool_version="1.2.3"
    ),
    "linux/orbit.service": lambda: render(
        "linux", "orbit.service.j2", orbit_root=ORBIT_ROOT, cpu_quota=20
    ),
    "linux/orbit-cpu-quota-150.service": lambda: render(
        "linux", "orbit.service.j2", orbit_root=ORBIT_ROOT, cpu_quota=150
    ),
    **{
        f"linux/{fmt}-{name}{'' if service else '-no-service'}.sh": _linux_script(
            name, fmt, service
        )
        for fmt, names in (
            ("deb", ("preinstall", "postinstall", "preremove", "postremove")),
            ("rpm", ("postinstall", "preremove", "postremove", "posttrans")),
            ("pkg.tar.zst", ("postinstall", "preremove", "postremove")),
        )
        for name in names
        for service in (True, False)
    },
    "macos/postinstall": lambda: render(
        "macos", "postinstall.j2", orbit_channel="stable", service=True
    ),
    "macos/postinstall-no-service": lambda: render(
        "macos", "postinstall.j2", orbit_channel="edge", service=False
    ),
    "macos/PackageInfo": lambda: render_xml(
        "macos",
        "PackageInfo.j2",
        identifier="com.fleetdm.orbit",
        version="1.40.0",
        install_kbytes=12345,
        number_of_files=42,
    ),
    "macos/Distribution": lambda: render_xml(
        "macos",
        "Distribution.j2",
        identifier="com.fleetdm.orbit",
        version="1.40.0",
        install_kbytes=12345,
        host_architectures="x86_64,arm64",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_template_is_the_reviewed_one(name: str) -> None:
    text = CASES[name]()
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8")


def test_every_template_has_a_golden_case() -> None:
    """A new template gets a case above (restart.sh.j2 is included by the Linux scripts)."""
    templates = Path(__file__).parents[1] / "templates"
    stems = {(p.parent.name, p.name.split(".")[0]) for p in templates.rglob("*.j2")}
    stems.discard(("linux", "restart"))
    missing = {s for s in stems if not any(c.startswith(f"{s[0]}/") and s[1] in c for c in CASES)}
    assert missing == set()


def test_templates_found_from_a_plain_checkout(tmp_path: Path) -> None:
    """Run from a source tree that was never installed (``PYTHONPATH=checkout``, no
    ``packager.templates`` package): the top-level templates/ beside packager/ is used."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    root = Path(__file__).parents[1]
    # Not packager/templates, where a tree links it there (the mutation harness does).
    shutil.copytree(
        root / "packager",
        tmp_path / "packager",
        ignore=shutil.ignore_patterns("__pycache__", "templates"),
    )
    shutil.copytree(root / "templates", tmp_path / "templates")
    (tmp_path / "templates" / "linux" / "orbit.service.j2").write_text("from the checkout\n")
    probe = (
        "from packager.render import render, templates_dir; "
        "print(templates_dir()); print(render('linux', 'orbit.service.j2'), end='')"
    )
    # -S: no site processing, so no editable-install finder maps packager.templates elsewhere;
    # the libraries come from site-packages on PYTHONPATH.
    site = sysconfig.get_paths()["purelib"]
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tmp_path}:{site}", "PATH": os.environ.get("PATH", "")},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{tmp_path / 'templates'}\nfrom the checkout\n"

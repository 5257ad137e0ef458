"""Our deb, rpm and pkg.tar.zst installed for real on a booted systemd (Debian 12, with its
dpkg, rpm and pacman): install, upgrade,
reinstall, downgrade, channel switch, self-update, remove, purge, reinstall after purge,
--no-service, missing system directories, and upgrades from and to fleetctl's packages.

The agent is a stand-in (agent/standin.c) that records its version, argv and environment and
runs until SIGTERM. During upgrades a sampler inside the machine records, every few ms, whether
the unit is enabled and which agent processes exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.acceptance.conftest import FLEETCTL_FORMATS, FORMATS, Packages
from tests.acceptance.machine import Machine

WANTS = "/etc/systemd/system/multi-user.target.wants/orbit.service"
# Directories of the system: they must exist after install, remove and purge.
SYSTEM_DIRS = ("/opt", "/usr/local", "/usr/local/bin", "/etc/default", "/var/log",
               "/usr/lib/systemd/system")  # fmt: skip
# Everything of ours: none of it may remain after a purge.
OURS = ("/opt/orbit", "/etc/default/orbit", "/usr/local/bin/orbit", "/var/log/orbit",
        "/var/log/osquery", "/var/lib/orbit", "/usr/lib/systemd/system/orbit.service", WANTS)  # fmt: skip
# Enabled means the wants/ link exists (-L): pacman replaces the unit file it points to by
# unlink and write, so for a few ms the link dangles while the unit stays enabled.
SAMPLER = f"""
: > /run/samples
while [ ! -e /run/sampler.stop ]; do
  if [ -L {WANTS} ]; then en=1; else en=0; fi
  echo "$(date +%s%3N) $en $(pgrep -d, -x orbit)" >> /run/samples
done
touch /run/sampler.done
"""

Boot = Callable[[], Machine]


# --- what the machine shows -------------------------------------------------------------------


@dataclass
class Agent:
    pid: int
    version: str
    argv: list[str]
    env: dict[str, str]

    def orbit_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k.startswith("ORBIT_")}


def parse_record(data: bytes) -> tuple[str, list[str], dict[str, str]]:
    """The stand-in's record: ``key LEN:VALUE\\n`` lines, values taken by length."""
    version, argv, env = "", [], {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        colon = data.index(b":", space)
        key, length = data[pos:space].decode(), int(data[space + 1 : colon])
        value = data[colon + 1 : colon + 1 + length].decode()
        pos = colon + 1 + length + 1
        if key == "version":
            version = value
        elif key == "arg":
            argv.append(value)
        else:
            name, _, val = value.partition("=")
            env[name] = val
    return version, argv, env


def agents(m: Machine) -> list[Agent]:
    pids = m.run("pgrep -x orbit || true").stdout.split()
    out = []
    for pid in pids:
        version, argv, env = parse_record(m.read(f"/var/lib/orbit-standin/{pid}.rec"))
        out.append(Agent(int(pid), version, argv, env))
    return out


def the_agent(m: Machine, timeout: float = 10) -> Agent:
    """The one running agent (waits for a restart in progress to finish)."""
    deadline = time.monotonic() + timeout
    while True:
        running = agents(m)
        if len(running) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(running) == 1, running
    return running[0]


def events(m: Machine) -> list[tuple[str, str, int]]:
    """(start|stop, version, pid) in order."""
    text = m.run("cat /var/lib/orbit-standin/events.log 2>/dev/null || true").stdout
    return [(w, v, int(p)) for _t, w, v, p in (line.split() for line in text.splitlines())]


def unit_state(m: Machine) -> tuple[str, str]:
    enabled = m.run("systemctl is-enabled orbit.service", check=False).stdout.strip()
    active = m.run("systemctl is-active orbit.service", check=False).stdout.strip()
    return enabled, active


def install(m: Machine, kind: str, name: str, *, env: dict[str, str] | None = None,
            rpm_flags: str = "") -> None:  # fmt: skip
    if kind == "deb":
        m.run(f"dpkg -i /pkgs/{name}.deb", env=env)
    elif kind == "rpm":
        m.run(f"rpm -U --nodeps {rpm_flags} /pkgs/{name}.rpm", env=env)
    else:  # pacman -U also reinstalls the installed version and downgrades
        m.run(f"pacman -U --noconfirm /pkgs/{name}.pkg.tar.zst", env=env)


def remove(m: Machine, kind: str, *, purge: bool = False) -> None:
    if kind == "deb":
        m.run(f"dpkg {'-P' if purge else '-r'} fleet-osquery")
    elif kind == "rpm":
        m.run("rpm -e --nodeps fleet-osquery")
    else:
        m.run("pacman -R --noconfirm fleet-osquery")


def verify_installed(m: Machine, kind: str) -> None:
    """dpkg -V / rpm -V / pacman -Qkk: every installed file as the package says."""
    if kind == "pkg.tar.zst":
        proc = m.run("pacman -Qkk fleet-osquery", check=False)
        assert proc.returncode == 0 and proc.stderr == "", proc
        assert proc.stdout.strip().endswith(" 0 altered files"), proc
        return
    proc = m.run(f"{'dpkg' if kind == 'deb' else 'rpm'} -V fleet-osquery", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc


def system_dirs_present(m: Machine) -> None:
    missing = [d for d in SYSTEM_DIRS if m.run(f"test -d {d}", check=False).returncode != 0]
    assert not missing, f"system directories removed: {missing}"


def running_as_installed(m: Machine, version: str, env: dict[str, str]) -> Agent:
    assert unit_state(m) == ("enabled", "active")
    agent = the_agent(m)
    assert agent.version == version
    assert agent.argv == ["/opt/orbit/bin/orbit/orbit"]
    assert agent.orbit_env() == env
    return agent


# --- the sampler ------------------------------------------------------------------------------


@dataclass
class Samples:
    rows: list[tuple[int, bool, list[int]]]  # (ms, unit enabled, agent pids)

    def disabled_ms(self) -> int:
        """How long the unit was seen disabled, in total."""
        return sum(b[0] - a[0] for a, b in zip(self.rows, self.rows[1:], strict=False) if not a[1])

    def gaps(self) -> list[int]:
        """Each stretch with no agent running, in ms (first to last empty sample, plus one)."""
        out, start = [], None
        for i, (t, _en, pids) in enumerate(self.rows):
            if not pids and start is None:
                start = t
            if pids and start is not None:
                out.append(t - start)
                start = None
            if i == len(self.rows) - 1 and start is not None:
                out.append(t - start)
        return out


def start_sampler(m: Machine) -> None:
    m.run(SAMPLER, detach=True)
    deadline = time.monotonic() + 10
    while m.run("test -s /run/samples", check=False).returncode != 0:
        assert time.monotonic() < deadline, "sampler did not start"
        time.sleep(0.05)
    time.sleep(0.3)  # a baseline before the change


def stop_sampler(m: Machine) -> Samples:
    time.sleep(0.5)  # and after it
    m.run("touch /run/sampler.stop; while [ ! -e /run/sampler.done ]; do sleep 0.01; done")
    rows = []
    for line in m.read("/run/samples").decode().splitlines():
        parts = line.split(" ")
        pids = [int(p) for p in parts[2].split(",")] if len(parts) > 2 and parts[2] else []
        rows.append((int(parts[0]), parts[1] == "1", pids))
    assert len(rows) > 100, f"sampler too slow: {len(rows)} samples"
    return Samples(rows)


def upgrade_watched(
    m: Machine, kind: str, name: str, old: Agent, new_version: str, env: dict[str, str],
    *, allowed_disabled_ms: int = 0, rpm_flags: str = "",
) -> Samples:  # fmt: skip
    """Install ``name`` over a running agent with the sampler on; the unit stays enabled, the
    agent is restarted exactly once, onto the new binary, and is absent only during that
    restart."""
    before = len(events(m))
    start_sampler(m)
    install(m, kind, name, rpm_flags=rpm_flags)
    new = running_as_installed(m, new_version, env)
    samples = stop_sampler(m)
    assert samples.disabled_ms() <= allowed_disabled_ms, samples.disabled_ms()
    assert samples.rows[-1][1], "unit left disabled"
    assert new.pid != old.pid
    assert events(m)[before:] == [("stop", old.version, old.pid), ("start", new_version, new.pid)]
    gaps = samples.gaps()
    assert len(gaps) <= 1 and all(g < 3000 for g in gaps), gaps
    return samples


# --- scenarios --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
def test_install_runs_the_agent_with_the_exact_environment(
    machine: Boot, packages: Packages, kind: str
) -> None:
    m = machine()
    install(m, kind, "v1")
    running_as_installed(m, "1.0.0", packages.env())
    verify_installed(m, kind)
    assert m.run("stat -c %a /etc/default/orbit").stdout.strip() == "600"
    assert m.run("readlink /usr/local/bin/orbit").stdout.strip() == "/opt/orbit/bin/orbit/orbit"
    system_dirs_present(m)


@pytest.mark.parametrize("kind", FORMATS)
def test_upgrade_keeps_the_unit_enabled_and_restarts_once(
    machine: Boot, packages: Packages, kind: str
) -> None:
    m = machine()
    install(m, kind, "v1")
    old = running_as_installed(m, "1.0.0", packages.env())
    upgrade_watched(m, kind, "v2", old, "2.0.0", packages.env())
    verify_installed(m, kind)


@pytest.mark.parametrize("kind", FORMATS)
def test_reinstall_and_downgrade(machine: Boot, packages: Packages, kind: str) -> None:
    m = machine()
    install(m, kind, "v2")
    first = running_as_installed(m, "2.0.0", packages.env())
    if kind == "rpm":
        install(m, kind, "v2", rpm_flags="--replacepkgs")
    else:
        install(m, kind, "v2")  # dpkg -i / pacman -U of the installed version reinstalls it
    again = running_as_installed(m, "2.0.0", packages.env())
    assert events(m)[-2:] == [("stop", "2.0.0", first.pid), ("start", "2.0.0", again.pid)]
    verify_installed(m, kind)
    upgrade_watched(m, kind, "v1", again, "1.0.0", packages.env(), rpm_flags="--oldpackage")
    verify_installed(m, kind)


@pytest.mark.parametrize("kind", FORMATS)
def test_channel_switch(machine: Boot, packages: Packages, kind: str) -> None:
    m = machine()
    install(m, kind, "v2")
    old = running_as_installed(m, "2.0.0", packages.env())
    upgrade_watched(m, kind, "v3-edge", old, "3.0.0", packages.env("edge"))
    target = m.run("readlink /opt/orbit/bin/orbit/orbit").stdout.strip()
    assert target == "/opt/orbit/bin/orbit/linux/edge/orbit"
    verify_installed(m, kind)


def test_self_update_restarts_about_a_minute_later(machine: Boot, packages: Packages) -> None:
    """Orbit installs its own update with INSTALLER_PATH set: the agent must not be restarted
    from inside the install (it is the parent of the installer), but ~60 s later by systemd.
    Both formats side by side, to wait the minute once."""
    booted = {kind: machine() for kind in FORMATS}
    old = {}
    for kind, m in booted.items():
        install(m, kind, "v1")
        old[kind] = running_as_installed(m, "1.0.0", packages.env())
    installed_at = time.monotonic()
    for kind, m in booted.items():
        install(m, kind, "v2", env={"INSTALLER_PATH": f"/pkgs/v2.{kind}"})
        still = the_agent(m)
        assert (still.pid, still.version) == (old[kind].pid, "1.0.0"), kind
        assert unit_state(m) == ("enabled", "active")
    pending = set(FORMATS)
    seen: dict[str, float] = {}
    while pending and time.monotonic() - installed_at < 90:
        for kind in sorted(pending):
            if ("start", "2.0.0") in [(w, v) for w, v, _p in events(booted[kind])]:
                seen[kind] = time.monotonic() - installed_at
                pending.discard(kind)
        time.sleep(1)
    assert not pending, f"no delayed restart in 90 s: {sorted(pending)}"
    for kind, m in booted.items():
        assert 55 <= seen[kind] <= 70, (kind, seen[kind])
        running_as_installed(m, "2.0.0", packages.env())


@pytest.mark.parametrize("kind", FORMATS)
def test_remove_purge_and_reinstall(machine: Boot, packages: Packages, kind: str) -> None:
    m = machine()
    install(m, kind, "v1")
    agent = running_as_installed(m, "1.0.0", packages.env())
    m.run("mkdir -p /var/lib/orbit && echo runtime > /var/lib/orbit/state")  # as Orbit would
    m.run("echo log > /var/log/orbit/orbit.log && echo db > /opt/orbit/osquery.db")
    remove(m, kind)
    assert agents(m) == []
    assert events(m)[-1] == ("stop", "1.0.0", agent.pid)
    assert unit_state(m)[1] in ("inactive", "unknown")
    assert not m.exists(WANTS)
    system_dirs_present(m)
    if kind == "deb":
        remove(m, kind, purge=True)
        system_dirs_present(m)
    left = [p for p in OURS if m.exists(p)]
    assert not left, f"left behind: {left}"
    query = {"deb": "dpkg -s", "rpm": "rpm -q", "pkg.tar.zst": "pacman -Q"}[kind]
    status = m.run(f"{query} fleet-osquery", check=False)
    assert status.returncode != 0
    install(m, kind, "v1")
    running_as_installed(m, "1.0.0", packages.env())
    verify_installed(m, kind)


@pytest.mark.parametrize("kind", FORMATS)
def test_missing_system_directories_are_created_and_kept(
    machine: Boot, packages: Packages, kind: str
) -> None:
    """A minimal system without /opt and /usr/local/bin: the install creates them, and neither
    remove nor purge takes them away (the package does not own them)."""
    m = machine()
    m.run("rmdir /opt /usr/local/bin")
    install(m, kind, "v1")
    running_as_installed(m, "1.0.0", packages.env())
    owner_of = {"deb": "dpkg -S", "rpm": "rpm -qf", "pkg.tar.zst": "pacman -Qo"}[kind]
    owners = m.run(f"{owner_of} /opt /usr/local/bin 2>&1 || true").stdout
    assert "fleet-osquery" not in owners, owners
    remove(m, kind, purge=True)
    system_dirs_present(m)


@pytest.mark.parametrize("kind", FORMATS)
def test_no_service(machine: Boot, packages: Packages, kind: str) -> None:
    m = machine()
    install(m, kind, "v1-noservice")
    assert m.exists("/usr/lib/systemd/system/orbit.service")
    assert unit_state(m)[0] == "disabled"
    assert unit_state(m)[1] in ("inactive", "unknown")
    assert agents(m) == []
    verify_installed(m, kind)
    remove(m, kind, purge=True)
    system_dirs_present(m)


@pytest.mark.parametrize("kind", FLEETCTL_FORMATS)
def test_upgrade_from_a_fleetctl_package(machine: Boot, packages: Packages, kind: str) -> None:
    m = machine()
    install(m, kind, "fleetctl-1.0.0")
    old = running_as_installed(m, "1.0.0", packages.fleetctl_env())
    # rpm: fleetctl's %preun disables and stops orbit on upgrade ($1=1); our %posttrans, which
    # runs after it, enables and starts it again. deb: no such window.
    allowed = 5000 if kind == "rpm" else 0
    upgrade_watched(m, kind, "v2", old, "2.0.0", packages.env(), allowed_disabled_ms=allowed)
    verify_installed(m, kind)
    remove(m, kind, purge=True)
    system_dirs_present(m)
    assert not [p for p in OURS if m.exists(p)]


@pytest.mark.parametrize("kind", FLEETCTL_FORMATS)
def test_upgrade_to_a_fleetctl_package(machine: Boot, packages: Packages, kind: str) -> None:
    m = machine()
    install(m, kind, "v1")
    old = running_as_installed(m, "1.0.0", packages.env())
    upgrade_watched(m, kind, "fleetctl-2.0.0", old, "2.0.0", packages.fleetctl_env())

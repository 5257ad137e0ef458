"""How /etc/default/orbit is read, as test oracles that do not share code with packager/render.py.

- :func:`parse_env_file`: systemd's EnvironmentFile= rules (systemd.exec(5); the states of
  ``parse_env_file_internal`` in src/basic/env-file.c), written in Python for the property tests.
- :func:`real_systemd_disagrees`: the same question put to the real systemd parser. No manager runs
  in a container, but ``systemd-analyze condition ConditionOSRelease=KEY=VALUE`` reads
  /etc/os-release with that very tokenizer (``parse_env_file`` and ``load_env_file``, the
  EnvironmentFile= reader, share ``parse_env_file_internal``): the file under test is bind-mounted
  over /etc/os-release in a private mount namespace and each expected value is compared by systemd.
  tests/test_env_file_property.py checks :func:`parse_env_file` against it.
- :func:`sh_values`: the file sourced by a POSIX shell (dash). systemd cannot tell an escaped ``$``
  or backquote from an unescaped one (inside double quotes both ``"a$b"`` and ``"a\\$b"`` read
  ``a$b``; checked against the real parser), so a renderer that stopped escaping them would pass a
  systemd-only oracle. A shell does expand them, and /etc/default files are sourced by shells
  (Debian's convention; the README promises ``\\ " $ \\``` escaped): :func:`read_env_file` requires
  both readers to agree.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

WHITESPACE = " \t\n\r"
NEWLINE = "\n\r"
COMMENTS = "#;"
SHELL_NEED_ESCAPE = '"\\`$'
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_env_file(text: str, *, comment_continues: bool = False) -> dict[str, str]:
    """The values systemd reads from ``text``. systemd 254 changed one rule: before it, a comment
    line ending in a backslash continued onto the next line (swallowing it); since then it ends at
    the newline. ``comment_continues`` selects the older rule (Debian 12 ships systemd 252)."""
    out: dict[str, str] = {}
    state = "PRE_KEY"
    key: list[str] = []
    value: list[str] = []
    key_ws: int | None = None
    value_ws: int | None = None

    def push(strip_value: bool) -> None:
        k = "".join(key[:key_ws] if key_ws is not None else key)
        v = value[:value_ws] if (strip_value and value_ws is not None) else value
        out[k] = "".join(v)

    for c in text:
        if state == "PRE_KEY":
            if c in COMMENTS:
                state = "COMMENT"
            elif c not in WHITESPACE:
                state, key, key_ws = "KEY", [c], None
        elif state == "KEY":
            if c in NEWLINE:
                state, key = "PRE_KEY", []
            elif c == "=":
                state, value, value_ws = "PRE_VALUE", [], None
            else:
                if c not in WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == "PRE_VALUE":
            if c in NEWLINE:
                push(False)
                state, key, value = "PRE_KEY", [], []
            elif c == "'":
                state = "SINGLE_QUOTE_VALUE"
            elif c == '"':
                state = "DOUBLE_QUOTE_VALUE"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in WHITESPACE:
                state = "VALUE"
                value.append(c)
        elif state == "VALUE":
            if c in NEWLINE:
                push(True)
                state, key, value = "PRE_KEY", [], []
            elif c == "\\":
                state, value_ws = "VALUE_ESCAPE", None
            else:
                if c not in WHITESPACE:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in NEWLINE:
                value.append(c)
        elif state == "SINGLE_QUOTE_VALUE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            if c in SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
        elif state == "COMMENT":
            if c == "\\":
                state = "COMMENT_ESCAPE"
            elif c in NEWLINE:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if c in NEWLINE and not comment_continues else "COMMENT"
    if state in (
        "PRE_VALUE",
        "VALUE",
        "VALUE_ESCAPE",
        "SINGLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE_ESCAPE",
    ):
        push(state == "VALUE")
    return out


def sh_values(text: str, keys: Iterable[str]) -> dict[str, str]:
    """The values of ``keys`` after ``. FILE`` in /bin/sh. PATH points nowhere, so a command
    substitution that escaped quoting cannot run a program. Raises AssertionError when the shell
    cannot source the file or complains while doing it."""
    names = list(keys)
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a shell variable name: {name!r}")
    script = '. "$1"\n' + "".join(f'printf "%s\\0" "${{{n}}}"\n' for n in names) + "printf END"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "env")
        path.write_text(text, encoding="utf-8")
        proc = subprocess.run(
            ["/bin/sh", "-c", script, "sh", str(path)],
            env={"PATH": "/nonexistent", "LC_ALL": "C"},
            capture_output=True,
            timeout=10,
            check=False,
            cwd=tmp,
        )
    out = proc.stdout.decode("utf-8", "surrogateescape")
    if proc.returncode != 0 or proc.stderr or not out.endswith("END"):
        raise AssertionError(
            "systemd and /bin/sh read different values: /bin/sh sourcing the file said "
            + repr(proc.stderr.decode(errors="replace"))
        )
    fields = out.removesuffix("END").split("\0")
    return dict(zip(names, fields[: len(names)], strict=True))


def read_env_file(text: str) -> dict[str, str]:
    """systemd's values (:func:`parse_env_file`), once systemd before and since 254 and a POSIX
    shell have all read the same ones."""
    values = parse_env_file(text)
    if parse_env_file(text, comment_continues=True) != values:
        raise AssertionError(
            "systemd before 254 reads other values (a comment ends in a backslash)"
        )
    shell = sh_values(text, [k for k in values if _NAME.fullmatch(k)])
    differ = {k: (values[k], v) for k, v in shell.items() if v != values[k]}
    if differ:
        raise AssertionError(f"systemd and /bin/sh read different values (systemd, sh): {differ}")
    return values


# -- the real systemd parser -----------------------------------------------------------------


def systemd_can_compare(value: str) -> bool:
    """ConditionOSRelease= cannot state an empty value, one that starts with whitespace, one with
    control characters (a condition is one line) or the lone value ``=`` (systemd 252 reads
    ``KEY==`` as an operator and gives up)."""
    return (
        value not in ("", "=")
        and value[0] not in " \t"
        and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    )


def _condition(key: str, value: str) -> str:
    # The condition's word is unquoted with backslash escapes; % starts a unit specifier.
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'ConditionOSRelease="{key}={quoted}"'


@functools.cache
def systemd_version() -> int:
    """The major version of the systemd-analyze here."""
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True,
                         timeout=30, check=True).stdout  # fmt: skip
    match = re.match(r"systemd (\d+)", out)
    if match is None:
        raise AssertionError(f"systemd-analyze --version said {out!r}")
    return int(match.group(1))


def real_systemd_available() -> str | None:
    """None when the real parser can be asked here, else why not."""
    if shutil.which("systemd-analyze") is None or shutil.which("unshare") is None:
        return "needs systemd-analyze and unshare(1)"
    probe = real_systemd_disagrees("ORBIT_PROBE=1\n", {"ORBIT_PROBE": "1"})
    return probe if isinstance(probe, str) else None


def real_systemd_disagrees(text: str, expected: Mapping[str, str]) -> list[str] | str:
    """The keys of ``expected`` whose value systemd's own parser reads differently from ``text``
    ([] when it agrees on all; systemd stops at the first mismatch, so at most one is named), or
    a string saying why systemd could not be asked. Values :func:`systemd_can_compare` refuses
    must be left out by the caller."""
    conditions = []
    for key, value in expected.items():
        if not _NAME.fullmatch(key) or not systemd_can_compare(value):
            raise ValueError(f"systemd cannot compare {key}={value!r}")
        conditions.append(_condition(key, value))
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "os-release")
        path.write_text(text, encoding="utf-8")
        proc = subprocess.run(
            ["unshare", *userns, "--mount", "sh", "-c",
             'f="$1"; shift; mount --bind "$f" /etc/os-release && '
             'exec systemd-analyze condition "$@"',
             "sh", str(path), *conditions],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    output = proc.stdout + proc.stderr
    if proc.returncode == 0 and "Conditions succeeded." in output:
        return []
    failed = re.findall(r'ConditionOSRelease="([A-Za-z_][A-Za-z0-9_]*)=.*" failed\.$', output, re.M)
    if proc.returncode == 1 and failed and "Couldn't determine" not in output:
        return failed
    return " ".join(output.split()) or f"exit {proc.returncode}"

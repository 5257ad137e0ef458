"""Issue 4, acceptance 4: hostile secrets and URLs either reach /etc/default/orbit exactly (as
systemd parses an EnvironmentFile, and as a POSIX shell sourcing it reads it) or are refused with
a clear error; never a broken file.

Issue 14: the oracle (tests/systemd_env.py) is itself checked against the real systemd parser, and
it tells an escaped ``$`` or backquote from an unescaped one (systemd alone cannot: both read the
same), so a renderer that stopped escaping them fails here."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.errors import UsageError
from packager.formats.linux import orbit_env
from packager.options import BuildRequest, has_control_chars
from packager.render import render
from tests.systemd_env import (
    parse_env_file,
    read_env_file,
    real_systemd_available,
    real_systemd_disagrees,
    systemd_can_compare,
    systemd_version,
)

NASTY = [*"\"'$`\\#=; \t\n\r", "${HOME}", "$(id)", "\\n", "ü", "😀", "\x00", "\x7f", "%", "&"]
text = st.lists(
    st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=4)), max_size=12
).map("".join)


def _env_file(req: BuildRequest) -> dict[str, str]:
    return read_env_file(render("linux", "orbit.env.j2", env=orbit_env(req), tool_version="t"))


@settings(max_examples=600, deadline=None)
@given(secret=text)
def test_secret_round_trips_or_is_refused(secret: str) -> None:
    try:
        req = BuildRequest(
            type="deb", fleet_url="https://fleet.example.com", enroll_secret=secret or "x"
        )
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message and (not secret or secret not in message or len(secret) < 3)
        assert has_control_chars(secret) or "UTF-8" in message
        return
    assert _env_file(req)["ORBIT_ENROLL_SECRET"] == (secret or "x")


@settings(max_examples=600, deadline=None)
@given(
    path=text,
    host=st.sampled_from(["fleet.example.com", "10.0.0.1:8080", "[::1]:443", "fleet-é.example"]),
)
def test_url_round_trips_or_is_refused(path: str, host: str) -> None:
    url = f"https://{host}/{path}"
    try:
        req = BuildRequest(type="rpm", fleet_url=url, enroll_secret="s")
    except UsageError as exc:
        assert "\n" not in str(exc)
        bad = has_control_chars(url)
        try:
            parsed = urlsplit(url)
            unparsable = not parsed.hostname
        except ValueError:
            unparsable = True
        assert bad or unparsable, (url, str(exc))
        return
    env = _env_file(req)
    assert env["ORBIT_FLEET_URL"] == url
    assert env["ORBIT_ENROLL_SECRET"] == "s"


# -- the oracle ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_systemd() -> None:
    why = real_systemd_available()
    if why is not None:
        pytest.skip(f"the real systemd parser cannot be asked here: {why}")


@pytest.mark.parametrize(
    ("unescaped", "escaped", "value"),
    [
        ("a$b", "a\\$b", "a$b"),
        ("${HOME}/x", "\\${HOME}/x", "${HOME}/x"),
        ("$(id)", "\\$(id)", "$(id)"),
        ("a`id`b", "a\\`id\\`b", "a`id`b"),
    ],
)
def test_oracle_tells_escaped_from_unescaped(unescaped: str, escaped: str, value: str) -> None:
    assert read_env_file(f'K="{escaped}"\n') == {"K": value}
    with pytest.raises(AssertionError, match="systemd and /bin/sh read different values"):
        read_env_file(f'K="{unescaped}"\n')
    # What systemd alone reads (the model, hand-checked against the real parser below).
    assert parse_env_file(f'K="{unescaped}"\n') == {"K": value}


@pytest.mark.parametrize(
    ("unescaped", "value"), [("a$b", "a$b"), ("${HOME}", "${HOME}"), ("a`id`b", "a`id`b")]
)
def test_real_systemd_reads_unescaped_dollar_as_escaped(
    real_systemd: None, unescaped: str, value: str
) -> None:
    """Why the shell is part of the oracle: systemd reads both spellings alike."""
    escaped = unescaped.replace("$", "\\$").replace("`", "\\`")
    assert (
        real_systemd_disagrees(f'K="{unescaped}"\nL="{escaped}"\n', {"K": value, "L": value}) == []
    )
    assert real_systemd_disagrees(f'K="{escaped}"\n', {"K": value + "x"}) == ["K"]


FRAGMENTS = ['"', "'", "\\", "$", "`", "#", ";", " ", "\t", "=", "\n", "\r", "x", "ü", "%",
             '\\"', "\\\n", "\\$", "\\\\", "'a b'", '"c d"', "${X}"]  # fmt: skip
KEYS = ["A", "B", "ORBIT_X", " C ", "#D", "E\t", ";F", "G H"]
env_line = st.tuples(
    st.sampled_from(KEYS),
    st.sampled_from(["=", " = ", "=\t"]),
    st.lists(
        st.one_of(
            st.sampled_from(FRAGMENTS),
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=8,
    ).map("".join),
).map("".join)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(env_line, min_size=1, max_size=4))
def test_model_agrees_with_real_systemd(real_systemd: None, lines: list[str]) -> None:
    """tests/systemd_env.parse_env_file against systemd's own tokenizer, on hostile files."""
    content = "\n".join(lines) + "\n"
    model = parse_env_file(content, comment_continues=systemd_version() < 254)
    checkable = {
        k: v
        for k, v in model.items()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) and systemd_can_compare(v)
    }
    if checkable:
        assert real_systemd_disagrees(content, checkable) == [], (content, checkable)


def test_comment_ending_in_backslash_is_read_as_this_systemd_reads_it(real_systemd: None) -> None:
    """systemd 254 stopped continuing a comment that ends in a backslash; the model knows both."""
    content = "#D=\\\nA=x\n"
    assert parse_env_file(content) == {"A": "x"}
    assert parse_env_file(content, comment_continues=True) == {}
    continues = systemd_version() < 254
    assert real_systemd_disagrees(content, {"A": "x"}) == (["A"] if continues else [])
    with pytest.raises(AssertionError, match="systemd before 254"):
        read_env_file(content)


HOSTILE = ['q"uote', "it's", "$HOME", "${HOME}", "$(id)", "`id`", "back\\slash", "\\", "end\\",
           "#hash", "; semi", "trail  ", "%n %% %", "ü😀", 'a"b\'c$d`e\\f', "\\$", "=x="]  # fmt: skip


@pytest.mark.parametrize("secret", HOSTILE)
def test_rendered_file_read_by_real_systemd(real_systemd: None, secret: str) -> None:
    url = f"https://fleet.example.com/p?q={secret}"
    req = BuildRequest(type="deb", fleet_url=url, enroll_secret=secret)
    content = render("linux", "orbit.env.j2", env=orbit_env(req), tool_version="t")
    assert (
        real_systemd_disagrees(content, {"ORBIT_ENROLL_SECRET": secret, "ORBIT_FLEET_URL": url})
        == []
    )
    assert read_env_file(content)["ORBIT_ENROLL_SECRET"] == secret

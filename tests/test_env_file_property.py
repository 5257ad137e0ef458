"""Issue 4, acceptance 4: hostile secrets and URLs either reach /etc/default/orbit exactly (as
systemd parses an EnvironmentFile) or are refused with a clear error; never a broken file."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from packager.errors import UsageError
from packager.formats.deb_rpm import orbit_env
from packager.options import BuildRequest, has_control_chars
from packager.render import render
from tests.systemd_env import parse_env_file

NASTY = [*"\"'$`\\#=; \t\n\r", "${HOME}", "$(id)", "\\n", "ü", "😀", "\x00", "\x7f", "%", "&"]
text = st.lists(
    st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=4)), max_size=12
).map("".join)


def _env_file(req: BuildRequest) -> dict[str, str]:
    return parse_env_file(render("linux", "orbit.env.j2", env=orbit_env(req), tool_version="t"))


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

"""Issue 12, class 9: a damaged, tampered or unsigned ``--update-roots`` is a usage error (exit 2,
one line naming the file and what is wrong), never an internal error (exit 70).

The property test mutates a real root (any field, any JSON value, sometimes re-signed with the
real root key so the mutation gets past the signature check into the client) and runs `verify`
in-process against a real server: whatever it is fed, the command ends with a one-line error
(PackagerError or a click usage error) or a report, never with another exception."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packager.cli import cli as cli_group
from packager.errors import PackagerError
from packager.repo.keys import RoleKey, decrypt_keys
from packager.repo.metadata import canonical
from packager.repo.passphrase import PassphraseSource
from packager.repo.repository import UpdateRepository
from tests.helpers import TEST_PASSPHRASES, FaultServer, cli

ROOT_FILE_HINT = "pass the root.json `orbit-packager updates roots` prints, unmodified"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FaultServer]]:
    repo = tmp_path_factory.mktemp("roots") / "repo"
    lib = UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES))
    lib.init()
    src = repo.parent / "orbit"
    src.write_bytes(b"\x7fELF orbit" * 10)
    lib.add(src, name="orbit", platform="linux", version="1.0.0", tags=["stable"])
    server = FaultServer(repo / "repository")
    yield repo, server
    server.close()


def _root(repo: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((repo / "repository/root.json").read_bytes())
    return doc


def _root_key(repo: Path) -> RoleKey:
    blob = (repo / "keys/root.json").read_bytes()
    return decrypt_keys(blob, TEST_PASSPHRASES["FLEET_ROOT_PASSPHRASE"])[-1]


def _resign(doc: dict[str, Any], key: RoleKey, keyid: str) -> None:
    sig = Ed25519PrivateKey.from_private_bytes(key.seed).sign(canonical(doc["signed"]))
    doc["signatures"] = [{"keyid": keyid, "sig": sig.hex()}]


def _mutated(repo: Path, mutate: Any, *, resign: bool = False) -> dict[str, Any]:
    doc = _root(repo)
    keyid = doc["signatures"][0]["keyid"]
    mutate(doc)
    if resign:
        _resign(doc, _root_key(repo), keyid)
    return doc


def _set_threshold(value: object) -> Any:
    return lambda d: d["signed"]["roles"]["root"].__setitem__("threshold", value)


CASES: dict[str, tuple[Any, bool, str]] = {
    # name: (mutation, re-signed with the real root key, what the message must say)
    "threshold 0": (_set_threshold(0), True, "threshold should be at least 1"),
    "threshold 0, unsigned": (_set_threshold(0), False, "threshold should be at least 1"),
    "missing keys": (lambda d: d["signed"].pop("keys"), True, "missing field 'keys'"),
    "missing roles": (lambda d: d["signed"].pop("roles"), True, "missing field 'roles'"),
    "missing expires": (lambda d: d["signed"].pop("expires"), True, "missing field 'expires'"),
    "signed is 5": (lambda d: d.__setitem__("signed", 5), False, "non-object 'signed' field"),
    "no signed": (lambda d: d.pop("signed"), False, "has no 'signed' field"),
    "not a root": (
        lambda d: d["signed"].__setitem__("_type", "targets"),
        True,
        "is not a TUF root.json ('_type' is 'targets')",
    ),
    "no signatures": (
        lambda d: d.__setitem__("signatures", []),
        False,
        "is not signed by its own root keys (root was signed by 0/1 keys",
    ),
    "tampered": (
        lambda d: d["signed"].__setitem__("version", 7),
        False,
        "is not signed by its own root keys",
    ),
    "threshold above the keys": (
        _set_threshold(2),
        True,
        "is not signed by its own root keys (root was signed by 1/2 keys",
    ),
    "signatures not a list": (
        lambda d: d.__setitem__("signatures", {"a": 1}),
        False,
        "has no 'signatures' list",
    ),
    # python-tuf reads a null version as 1 and checks the signature over its own rewrite, so
    # the real signature of version 1 still verifies; `verify` then failed with an internal
    # error (found by the property test below).
    "version null, unsigned": (
        lambda d: d["signed"].__setitem__("version", None),
        False,
        "has 'version' None, not a positive integer",
    ),
    "version '1'": (
        lambda d: d["signed"].__setitem__("version", "1"),
        True,
        "has 'version' '1', not a positive integer",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_update_roots_are_usage_errors(
    served: tuple[Path, FaultServer], tmp_path: Path, case: str
) -> None:
    repo, server = served
    mutate, resign, needle = CASES[case]
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps(_mutated(repo, mutate, resign=resign)))
    out = cli("verify", "--update-url", server.url, "--update-roots", roots, check=False)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"orbit-packager: error: --update-roots file {roots} "), lines[0]
    assert needle in lines[0], lines[0]
    assert ROOT_FILE_HINT in lines[0]
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"{not json", "is not JSON (Expecting property name"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "too deeply nested"),
        (b'"a root"', "is a JSON str, not a signed TUF root.json"),
        (b"[]", "holds a list of keys"),
    ],
)
def test_unreadable_update_roots_files(
    served: tuple[Path, FaultServer], tmp_path: Path, content: bytes, needle: str
) -> None:
    _repo, server = served
    roots = tmp_path / "roots.json"
    roots.write_bytes(content)
    out = cli("verify", "--update-url", server.url, "--update-roots", roots, check=False)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert f"--update-roots file {roots}" in out.stderr and needle in out.stderr, out.stderr


def test_inline_root_errors_say_inline(served: tuple[Path, FaultServer]) -> None:
    repo, server = served
    doc = _mutated(repo, _set_threshold(0), resign=True)
    out = cli("verify", "--update-url", server.url, "--update-roots", json.dumps(doc), check=False)
    assert out.returncode == 2
    assert "--update-roots (inline JSON) is not valid TUF root metadata" in out.stderr


# -- the property: no root file reaches exit 70 -----------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated_roots(draw: st.DrawFn, original: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The original root with 1-3 mutations anywhere (replace, delete or add a field), and
    whether to re-sign the result with the real root key."""
    doc = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        # walk down a random path, at least one step
        while True:
            if isinstance(node, dict) and node:
                key = draw(st.sampled_from(sorted(node)))
                child = node[key]
            elif isinstance(node, list) and node:
                key = draw(st.integers(0, len(node) - 1))
                child = node[key]
            else:
                break
            if not isinstance(child, dict | list) or draw(st.booleans()):
                action = draw(st.sampled_from(["replace", "delete", "add"]))
                if action == "replace":
                    node[key] = draw(json_values)
                elif action == "delete":
                    del node[key]
                elif isinstance(node, dict):
                    node[draw(st.text(max_size=8))] = draw(json_values)
                else:
                    node.append(draw(json_values))
                break
            node = child
    return doc, draw(st.booleans())


def _run_verify(args: list[str]) -> tuple[BaseException | None, str]:
    """``verify`` in-process as main() runs it; returns what ended it and its stderr."""
    err = io.StringIO()
    ended: BaseException | None = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli_group.main(args=args, prog_name="orbit-packager", standalone_mode=False)
        except BaseException as exc:  # the property is about what escapes
            ended = exc
    return ended, err.getvalue()


def test_no_root_file_is_an_internal_error(served: tuple[Path, FaultServer]) -> None:
    repo, server = served
    original = _root(repo)
    key = _root_key(repo)
    keyid = original["signatures"][0]["keyid"]
    roots = repo.parent / "property-roots.json"
    seen: dict[str, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(mutated_roots(original), st.sampled_from(["json", "truncated", "latin-1"]))
    def check(mutated: tuple[dict[str, Any], bool], encoding: str) -> None:
        doc, resign = mutated
        if resign and isinstance(doc.get("signed"), dict):
            with contextlib.suppress(Exception):  # unencodable: left unsigned
                _resign(doc, key, keyid)
        text = json.dumps(doc)
        data = text.encode()
        if encoding == "truncated":
            data = data[: len(data) // 2]
        elif encoding == "latin-1":
            data = text.encode("latin-1", "replace") + b"\xe9"
        roots.write_bytes(data)
        ended, stderr = _run_verify(
            ["verify", "--update-url", server.url, "--update-roots", str(roots), "--timeout", "20s"]
        )
        if isinstance(ended, SystemExit):  # verify ran: a report and exit 0, 1 or 4
            assert ended.code in (0, 1, 4), ended.code
            kind = f"exit {ended.code}"
        else:
            assert isinstance(ended, PackagerError | click.ClickException), repr(ended)
            assert "\n" not in str(ended), str(ended)
            assert ended.exit_code != 70
            kind = f"{type(ended).__name__} {ended.exit_code}"
        assert len(stderr.splitlines()) <= 1, stderr
        seen[kind] = seen.get(kind, 0) + 1

    check()
    # the mutations reached past the root checks into the client, not only the usage errors
    assert seen.get("UsageError 2", 0) > 0, seen
    assert sum(n for k, n in seen.items() if not k.startswith("UsageError")) > 0, seen


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FaultServer]]:
    """A repository just initialized: every role at version 1."""
    repo = tmp_path_factory.mktemp("fresh") / "repo"
    UpdateRepository(repo, PassphraseSource(environ=TEST_PASSPHRASES)).init()
    server = FaultServer(repo / "repository")
    yield repo, server
    server.close()


@pytest.mark.parametrize("command", ["verify", "package"])
def test_a_served_timestamp_with_a_null_version_is_refused(
    fresh: tuple[Path, FaultServer], tmp_path: Path, command: str
) -> None:
    """The server (or someone between) rewrites timestamp.json's version 1 as null without
    re-signing (no other role pins its length): python-tuf accepts it (see CASES above), the
    agent's go-tuf would read no number. Refused in one line, exit 4, nothing built. (In
    snapshot.json and targets.json the longer file already fails the length the role above
    pins.)"""
    repo, server = fresh
    path = repo / "repository" / "timestamp.json"
    original = path.read_bytes()
    doc = json.loads(original)
    assert doc["signed"]["version"] == 1
    doc["signed"]["version"] = None
    path.write_text(json.dumps(doc))
    try:
        flags: list[str | Path] = ["--update-url", server.url, "--update-roots",
                                   repo / "repository/root.json"]  # fmt: skip
        if command == "package":
            flags += ["--type", "deb", "--no-cache", "--outdir", tmp_path / "out",
                      "--fleet-url", "https://fleet.example.com", "--enroll-secret", "s"]  # fmt: skip
        out = cli(command, *flags, check=False, env={"XDG_CACHE_HOME": str(tmp_path / "c")})
    finally:
        path.write_bytes(original)
    assert out.returncode == 4, out.stderr
    assert out.stderr.splitlines() == [
        "orbit-packager: error: the update server's timestamp.json has 'version' None, not a"
        " positive integer (a TUF repository writes whole numbers: tampered with, or written"
        " by a broken tool)"
    ]
    assert not (tmp_path / "out").exists()

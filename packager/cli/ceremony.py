"""`updates keygen` and `updates root stage|sign|status|publish`: root signing ceremonies with
keys on different people's machines (files or PKCS#11 tokens)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from packager.cli.common import (
    ROLES,
    duration_option_callback,
    json_option,
    path_option,
    signing_key_options,
)
from packager.errors import EXIT_CHECK_FAILED, UsageError
from packager.flagsyntax import FleetctlCommand, FleetctlGroup

if TYPE_CHECKING:
    from packager.repo.ceremony import Ceremony, CeremonyStatus
    from packager.repo.signing import SigningKey

# The library (tuf, cryptography, pkcs11) is imported inside the commands: `--help` and the
# other commands must not load it.


def _ceremony(path: Path) -> Ceremony:
    from packager.repo.ceremony import Ceremony
    from packager.repo.repository import UpdateRepository

    return Ceremony(UpdateRepository(path))


_ROLE = click.Choice(ROLES)


@click.command(cls=FleetctlCommand)
@click.option("--role", required=True, type=_ROLE, help="The role the key is for.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="New go-tuf key file (encrypted with FLEET_<ROLE>_PASSPHRASE or a prompt; 0600).",
)
@click.option(
    "--key",
    "key_uri",
    metavar="URI",
    help="Instead of --out: a key already on a PKCS#11 token (pkcs11:token=...;object=...;"
    "?module-path=...; make it with the token's tool, e.g. ykman or pkcs11-tool): only its"
    " public part is written.",
)
@click.option(
    "--public-out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the public key: the one file that goes to the root holders.",
)
@json_option
def keygen(
    role: str, out: Path | None, key_uri: str | None, public_out: Path, as_json: bool
) -> None:
    """Make a key on this machine (or on a token) for a role; print its key ID.

    A releaser makes a targets key and sends PUB.json to the root holders, who add it with
    `updates root stage --add-key targets PUB.json`. The private key never leaves this machine.
    """
    if (out is None) == (key_uri is None):
        raise UsageError("give exactly one of --out KEYFILE and --key URI")
    from packager.repo.keys import RoleKey
    from packager.repo.passphrase import PassphraseSource
    from packager.repo.signing import public_key_document, write_new_key_file

    key: SigningKey
    if key_uri is not None:
        from packager.repo.hsm import HsmKey

        key = HsmKey.open(key_uri, role=role)
    elif out is not None:
        passphrase = PassphraseSource().get(role, confirm=True)
        new = RoleKey.generate()
        write_new_key_file(out, [new], passphrase.value)
        key = new
    document = public_key_document(role, key)
    data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
    try:
        with public_out.open("xb") as f:
            f.write(data)
    except FileExistsError:
        raise UsageError(
            f"{public_out} already exists", hint="choose another --public-out"
        ) from None
    if as_json:
        click.echo(
            json.dumps({"role": role, "keyid": key.gotuf_keyid, "public_out": str(public_out)})
        )
    else:
        click.echo(f"Generated {role} key with ID: {key.gotuf_keyid}")
        click.echo(f"Public key written to {public_out}")


@click.group(cls=FleetctlGroup)
def root() -> None:
    """Root signing ceremony: stage the next root, collect signatures, publish it.

    Holders sign one at a time wherever their keys are; only staged/root.json travels.
    """


def _pairs(values: tuple[tuple[str, str], ...], what: str) -> list[tuple[str, str]]:
    for role, _value in values:
        if role not in ROLES:
            raise UsageError(f"{what}: unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
    return list(values)


@root.command(cls=FleetctlCommand)
@path_option
@click.option(
    "--add-key",
    nargs=2,
    multiple=True,
    metavar="ROLE PUB.json",
    help="Add the key of a `keygen --public-out` file to ROLE (repeatable).",
)
@click.option(
    "--revoke-key",
    nargs=2,
    multiple=True,
    metavar="ROLE KEYID",
    help="Remove a key (at least 8 characters of its ID) from ROLE (repeatable).",
)
@click.option(
    "--threshold",
    nargs=2,
    multiple=True,
    metavar="ROLE N",
    help="Signatures ROLE needs from now on (repeatable).",
)
@click.option(
    "--root-expiration",
    default="87600h",
    show_default=True,
    callback=duration_option_callback("--root-expiration"),
    help="How long the new root stays valid, from now.",
)
@click.option("--replace", is_flag=True, help="Discard a root already staged and start over.")
@json_option
def stage(
    path: Path,
    add_key: tuple[tuple[str, str], ...],
    revoke_key: tuple[tuple[str, str], ...],
    threshold: tuple[tuple[str, str], ...],
    root_expiration: timedelta,
    replace: bool,
    as_json: bool,
) -> None:
    """Write the next root version, unsigned, to staged/root.json."""
    thresholds = []
    for role, n in _pairs(threshold, "--threshold"):
        if not n.isdigit():
            raise UsageError(f"--threshold {role} {n}: not a number")
        thresholds.append((role, int(n)))
    status = _ceremony(path).stage(
        add=[(r, Path(f)) for r, f in _pairs(add_key, "--add-key")],
        revoke=_pairs(revoke_key, "--revoke-key"),
        thresholds=thresholds,
        expiration=root_expiration,
        replace=replace,
    )
    _show(status, as_json)


@root.command(cls=FleetctlCommand)
@path_option
@click.option(
    "--key",
    "key_ref",
    required=True,
    metavar="URI|KEYFILE",
    help="The holder's root key: a pkcs11: URI (PIN from FLEET_ROOT_PIN or a prompt) or a"
    " go-tuf key file (FLEET_ROOT_PASSPHRASE or a prompt).",
)
@click.option("--yes", is_flag=True, help="Sign without asking (after reading the changes).")
@json_option
def sign(path: Path, key_ref: str, yes: bool, as_json: bool) -> None:
    """Add this holder's signature to the staged root, after showing what changes."""

    def confirm(status: CeremonyStatus) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(
                "no terminal to confirm on", hint="read `updates root status`, then pass --yes"
            )
        click.echo(status.text(), err=True)
        return click.confirm("Sign this root?", default=False, err=True)

    signed, status = _ceremony(path).sign(key_ref, confirm=confirm)
    if as_json:
        click.echo(
            json.dumps({"signed_with": signed, **status.to_json()}, indent=2, sort_keys=True)
        )
    else:
        click.echo(f"Signed staged root v{status.staged} with {', '.join(k[:16] for k in signed)}")
        click.echo(status.text())


@root.command(cls=FleetctlCommand)
@path_option
@json_option
def status(path: Path, as_json: bool) -> None:
    """Signatures collected against both thresholds; exit 0 when ready to publish, else 1."""
    result = _ceremony(path).status()
    _show(result, as_json)
    sys.exit(0 if result.ready else EXIT_CHECK_FAILED)


@root.command(cls=FleetctlCommand)
@path_option
@signing_key_options("targets", "snapshot", "timestamp")
@json_option
def publish(path: Path, as_json: bool, **key_refs: tuple[str, ...]) -> None:
    """Publish the staged root when it is signed by the threshold of the current root and of
    itself; re-sign the roles whose keys it changes (with keys/ or the --<role>-key given).
    Else refuse, changing nothing."""
    from packager.repo.ceremony import Ceremony
    from packager.repo.repository import UpdateRepository

    repo = UpdateRepository(path)
    repo.key_refs = {k.removesuffix("_key_refs"): list(v) for k, v in key_refs.items() if v}
    result = Ceremony(repo).publish()
    data: dict[str, Any] = {"versions": result.versions}
    text = "Published " + ", ".join(f"{r} v{v}" for r, v in result.versions.items())
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(text)


def _show(status: CeremonyStatus, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(status.text())

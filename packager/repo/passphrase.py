"""Role passphrases: ``FLEET_<ROLE>_PASSPHRASE`` first, else a prompt on the terminal.

Like fleetctl: a set variable wins even when empty (and an empty passphrase is refused), new key
files ask twice, and passphrases are cached per role for the life of the command. Unlike a naive
``getpass``, we never fall back to reading standard input: with no terminal and no variable the
command fails at once with the variable to set, instead of hanging in CI.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from packager.errors import PassphraseError

MAX_ATTEMPTS = 3


def env_var(role: str) -> str:
    return f"FLEET_{role.upper()}_PASSPHRASE"


def has_terminal() -> bool:
    """Whether /dev/tty can be opened (prompting is possible)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def tty_prompt(prompt: str) -> str:
    # getpass reads from /dev/tty with echo off; we checked above that one exists.
    return getpass.getpass(prompt)


@dataclass
class Passphrase:
    """A passphrase and where it came from; ``repr`` never shows the value."""

    value: str = field(repr=False)
    source: str
    interactive: bool


class PassphraseSource:
    """Hands out passphrases per role, from the environment or the terminal."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        prompt: Callable[[str], str] | None = None,
        terminal_available: Callable[[], bool] | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._prompt = prompt or tty_prompt
        self._terminal_available = terminal_available or has_terminal
        self._cache: dict[str, Passphrase] = {}

    def get(self, role: str, *, confirm: bool = False) -> Passphrase:
        cached = self._cache.get(role)
        if cached is not None:
            return cached
        var = env_var(role)
        if var in self._environ:
            value = self._environ[var]
            if not value:
                raise PassphraseError(f"{var} is set but empty; empty passphrases are refused")
            result = Passphrase(value, var, interactive=False)
        else:
            result = Passphrase(self._ask(role, confirm), "the prompt", interactive=True)
        self._cache[role] = result
        return result

    def known(self, role: str) -> bool:
        """Whether ``role``'s passphrase is at hand without asking (a variable, or typed)."""
        return role in self._cache or env_var(role) in self._environ

    def forget(self, role: str) -> None:
        self._cache.pop(role, None)

    def _ask(self, role: str, confirm: bool) -> str:
        var = env_var(role)
        if not self._terminal_available():
            raise PassphraseError(
                f"no terminal to ask for the {role} key passphrase",
                hint=f"set {var}",
            )
        for _ in range(MAX_ATTEMPTS):
            try:
                value = self._prompt(f"Enter {role} key passphrase: ")
                if not value:
                    print("Passphrase must not be empty.", file=sys.stderr)
                    continue
                if confirm and self._prompt(f"Repeat {role} key passphrase: ") != value:
                    print("The entered passphrases do not match.", file=sys.stderr)
                    continue
            except UnicodeDecodeError:  # bytes the terminal's encoding cannot decode
                print("Passphrase is not valid text in the terminal's encoding.", file=sys.stderr)
                continue
            return value
        raise PassphraseError(
            f"no usable {role} key passphrase after {MAX_ATTEMPTS} attempts",
            hint=f"or set {var}",
        )

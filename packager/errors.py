"""Errors every command reports as one line, with an exit code that means something.

Exit codes (documented in the README):

* 0 -- success
* 1 -- a check failed (``status``/``verify``: something expired, expires soon or is broken)
* 2 -- bad input or a state the user must fix (usage, names, passphrases, missing keys, ...)
* 3 -- the repository on disk is damaged or does not verify
* 4 -- fetching or verifying through TUF failed (``fetch``, ``verify``, ``package``): a server
  error, a dropped or stalled connection, ``--timeout``, a signature, hash or expiry check
* 75 -- temporary: another command holds the repository lock (EX_TEMPFAIL; retry later)
* 70 -- internal error (a bug: no input, file or server answer may lead here)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_CORRUPT = 3
EXIT_FETCH = 4
EXIT_BUSY = 75
EXIT_INTERNAL = 70


class PackagerError(Exception):
    """An error shown to the user as a single line; never carries a secret."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(PackagerError):
    """Invalid flags, names or values."""


class KeyFileError(PackagerError):
    """A key file is missing, unreadable or cannot be decrypted."""


class PassphraseError(PackagerError):
    """No passphrase could be obtained, or it does not decrypt the key file."""


class RepositoryStateError(PackagerError):
    """The repository is not in a state the command can work on (not initialized, ...)."""


class CorruptRepositoryError(PackagerError):
    """Metadata on disk is malformed or does not verify."""

    exit_code = EXIT_CORRUPT


class BusyError(PackagerError):
    """Another orbit-packager command is working on the same repository."""

    exit_code = EXIT_BUSY

"""``python -m packager``: the signal handlers come first, so that an interrupt while the command
line loads exits 130/143/129 like one during the command, never with a traceback. The library
(tuf, jinja2, ...) is imported later, by the command that uses it, inside main()'s handling."""

import sys

from packager import signals

signals.install()
try:
    from packager.cli import main
except signals.Interrupted as exc:  # nothing was created yet: nothing to clean up
    signals.finishing()
    print(f"orbit-packager: {exc.message}", file=sys.stderr)
    sys.exit(exc.exit_code)

main()

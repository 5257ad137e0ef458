"""``python -m mutate``: see :mod:`mutate`."""

from mutate.harness import main

raise SystemExit(main())

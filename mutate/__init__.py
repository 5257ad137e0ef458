"""Mutation testing for orbit-packager: ``make mutate`` (``python -m mutate``).

Do the tests notice when the code they guard is broken? Each *mutant* is one deliberate,
meaningful bug in ``packager/repo/``, ``packager/fetch/``, ``packager/formats/`` (with
``render.py``, ``layout.py`` and the Jinja templates), ``packager/options.py`` or
``packager/writers/``; the tests covering that file run against it, and a mutant no test fails
on is a *survivor*: a behaviour nothing protects. The run prints one line per package or module
(``packager/repo: killed K of N (P%)``), then every survivor as ``path:line: operator: original
-> mutant``, and writes a JSON report; it exits 1 when a package or module is under
``--threshold`` (default 90). Reviewed equivalent mutants (``mutate/equivalent.txt``) are
printed but not scored.

Why a harness of our own rather than mutmut or cosmic-ray (both on PyPI):

* Our tests drive the real command line in child processes (``python -m packager`` from
  ``tests/helpers.py``), kill it with SIGKILL, and build packages with external tools. mutmut 3
  rewrites every function into trampolines inside its ``mutants/`` copy and learns which tests
  reach a mutant by recording calls in the pytest process: code reached only through a child
  process is recorded as covered by no test, so most of ``packager/repo`` would be "not
  checked" rather than tested. cosmic-ray runs one fixed test command for a whole session: no
  per-file test selection, which at this suite's size (13 minutes, crash trials) makes each
  mutant cost the whole suite.
* Neither has the operators that matter here: publication order (two statements swapped, a
  rename loop reversed: ``timestamp.json`` or the new root published first), a dropped call
  (``os.fsync``, a ``verify*()``), a dropped ``if ...: raise`` guard, permission modes widened
  (0o600 -> 0o644, ``SECRET_MODE`` -> ``PUBLIC_MODE``), or a line of an installer template
  removed. Their catalogues are instead dominated by mutants that say little (string contents
  replaced, arithmetic operators swapped), each costing a test run.
* We need an explicit, reviewed source -> test map (``mutate/testmap.py``), a cache keyed by
  content, and coverage-based selection of single tests that also sees child processes
  (``mutate/derive_map.py`` labels their coverage with the running test's id).

The catalogue is in :mod:`mutate.operators`, the runner in :mod:`mutate.harness`.
"""

"""fleetctl's command-line syntax on top of click, so scripts written for fleetctl keep working.

fleetctl parses flags with urfave/cli over Go's ``flag`` package, which accepts what click does
not: a value for a boolean flag (``--service=false``, ``--debug=1``) and a single dash before a
long name (``-fleet-url URL``). :class:`FleetctlCommand` rewrites those forms to click's before
parsing, and groups the options of ``--help`` into titled sections.

Written here because click has no hook for either (its ``flag_value`` optional values would
also swallow the next word, which Go never does) and no option-group feature of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

# strconv.ParseBool, what Go's flag package uses for boolean flags and urfave for their env vars.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool: True, False, or None when ``text`` is not a Go boolean."""
    if text in GO_TRUE:
        return True
    if text in GO_FALSE:
        return False
    return None


class FleetctlCommand(click.Command):
    """A command that also accepts Go's flag syntax and prints its options in sections.

    ``sections`` maps a parameter name to the title of its section in ``--help``; the order of
    first appearance is the order of the sections, and unlisted options come last.
    """

    def __init__(
        self, *args: object, sections: dict[str, str] | None = None, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sections = sections or {}
        for param in self.params:  # every fallback is named in --help
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True

    # -- parsing ----------------------------------------------------------------------------
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten, forced = self._rewrite(ctx, args)
        rest = super().parse_args(ctx, rewritten)
        for name, value in forced.items():
            ctx.params[name] = value
        return rest

    def _options(self) -> dict[str, click.Option]:
        found: dict[str, click.Option] = {}
        for param in self.params:
            if isinstance(param, click.Option):
                for opt in (*param.opts, *param.secondary_opts):
                    if opt.startswith("--"):
                        found[opt] = param
        return found

    def _rewrite(
        self, ctx: click.Context, args: Sequence[str]
    ) -> tuple[list[str], dict[str, bool]]:
        """Go's forms to click's. A word that is the value of the option before it is never
        touched: an enroll secret may well start with a dash."""
        options = self._options()
        out: list[str] = []
        forced: dict[str, bool] = {}
        takes_value = False
        for i, token in enumerate(args):
            if takes_value:
                out.append(token)
                takes_value = False
                continue
            if token == "--":  # noqa: S105 - the end of options, not a password
                out.extend(args[i:])
                break
            name, eq, value = token.partition("=")
            if name.startswith("-") and not name.startswith("--") and "-" + name in options:
                name = "-" + name  # -fleet-url: Go accepts one dash before a long name
            param = options.get(name)
            if param is None:
                out.append(token)
                continue
            if not (param.is_flag and param.is_bool_flag):
                out.append(name + eq + value)
                takes_value = not eq and not param.is_flag and param.nargs == 1
                continue
            if not eq:
                out.append(name)
                continue
            parsed = parse_go_bool(value)
            if parsed is None:
                raise click.BadParameter(
                    f"{value!r} is not a boolean: use {name}=true or {name}=false",
                    ctx=ctx,
                    param=param,
                )
            if name in param.secondary_opts:
                parsed = not parsed  # --no-service=true is --service=false
            if parsed:
                out.append(param.opts[0])
            elif param.secondary_opts:
                out.append(param.secondary_opts[0])
            elif param.name:
                forced[param.name] = False  # overrides an environment variable too
        return out, forced

    # -- help -------------------------------------------------------------------------------
    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not self.sections:
            super().format_options(ctx, formatter)
            return
        grouped: dict[str, list[tuple[str, str]]] = {}
        for title in dict.fromkeys(self.sections.values()):
            grouped[title] = []
        other: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            is_help = param is self.get_help_option(ctx)
            section = self.sections.get("help" if is_help else param.name or "")
            (grouped[section] if section else other).append(record)
        if other:
            grouped["Other options"] = other
        for title, records in grouped.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class FleetctlGroup(click.Group):
    """A group whose commands and subgroups are built with the classes above."""

    command_class = FleetctlCommand
    group_class = type  # subgroups are FleetctlGroups too

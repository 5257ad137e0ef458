"""Jinja rendering of the installer templates, with one escaping filter per target syntax.

Templates never interpolate raw values: each context has a filter that either produces text the
consumer parses back to exactly the given value, or refuses the value with a clear error.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.errors import UsageError
from packager.options import has_control_chars

if TYPE_CHECKING:
    import jinja2

_NEEDS_ESCAPE = re.compile(r'([\\"$`])')


def systemd_env(value: object) -> str:
    """Quote ``value`` for a systemd EnvironmentFile (systemd.exec(5)).

    Inside double quotes systemd unescapes exactly \\ \" \\$ \\` (every version; newer ones keep
    the backslash before other characters), and CR/LF end the line, so control characters are
    refused rather than written.
    """
    text = str(value)
    if has_control_chars(text):
        raise UsageError("a value for /etc/default/orbit contains a newline or control character")
    return '"' + _NEEDS_ESCAPE.sub(r"\\\1", text) + '"'


def templates_dir() -> Path:
    try:
        located = Path(str(importlib.resources.files("packager.templates")))
        if located.is_dir():
            return located
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "templates"


@functools.cache
def environment(subdir: str, *, xml: bool = False) -> jinja2.Environment:
    """One environment per template folder and escaping mode, shared by every render of the
    process (jinja2's template cache is thread-safe): each template is compiled once."""
    import jinja2  # here: importing this module (the builders do) must not load jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / subdir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # XML templates escape every value; shell/systemd ones use explicit filters.
        autoescape=xml,  # noqa: S701 - non-XML templates use explicit escaping filters
    )
    env.filters["systemd_env"] = systemd_env
    return env


def render(subdir: str, name: str, **context: Any) -> str:
    return environment(subdir).get_template(name).render(**context)


def render_xml(subdir: str, name: str, **context: Any) -> str:
    """Render an XML template: every interpolated value is XML-escaped."""
    return environment(subdir, xml=True).get_template(name).render(**context)

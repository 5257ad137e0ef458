"""The mutant catalogue: meaningful, single-point changes of Python source and Jinja templates.

Every mutant is a list of byte-range edits of the original file, so the rest of the file (its
comments, formatting and line numbers) stays as it was and a survivor reads as a small diff.
Expression mutants replace the node's own source span with ``ast.unparse`` of the changed node,
wrapped in parentheses so operator precedence around it cannot change.

Operators (the names printed in reports and used in ``equivalent.txt``):

``compare``      ``<``/``<=``/``>``/``>=`` shifted by one boundary, ``==``/``!=``, ``is``/
                 ``is not``, ``in``/``not in`` negated
``not-drop``     ``not x`` -> ``x``
``not-insert``   the test of an ``if``/``elif``/``while``/conditional expression negated
``and-or``       ``and`` <-> ``or``
``int``          an integer constant + 1 and - 1 (off by one); not octal modes (see ``mode``)
``mode``         an octal permission constant widened: group/other read added (0o600 -> 0o644,
                 0o700 -> 0o755), or, when they already read, write added (0o644 -> 0o666)
``mode-name``    a module's ``*_MODE`` constant replaced by a wider one of the same module
                 (``SECRET_MODE`` -> ``PUBLIC_MODE``)
``flag``         a ``True``/``False`` keyword argument flipped (``follow_symlinks=False``)
``call-drop``    a call statement removed (``os.fsync(fd)``, ``f.flush()``, ``verify(...)``)
``raise-drop``   a ``raise`` statement removed
``guard-drop``   an ``if ...: ... raise`` guard (no ``else``) removed entirely
``return``       ``return True`` <-> ``return False``; ``return <expr>`` -> ``return None``
``swap``         two adjacent statements of a function body exchanged (publication order,
                 fsync before rename, backup before replace); pairs where the second reads a
                 name the first binds, where neither calls anything, or where one is a nested
                 ``def``/``class`` (it only binds a name) are not generated
``order``        a ``for`` loop over a literal sequence reversed, and a loop that renames or
                 replaces files (``os.replace``, ``.rename``, ``move_into_place``) run backwards
``line-drop``    (templates) one line of a shell/XML/unit template removed; Jinja control lines,
                 blank lines and comments are kept

Not mutated: docstrings, annotations, decorators, f-string internals, ``if TYPE_CHECKING``
blocks, ``__all__``, module-level UPPER_CASE integers of 100 or more, literal or computed from
literals only (``CHUNK = 1024 * 1024``: a tunable size or bound; an off-by-one at a bound shows
where it is compared, as a ``compare`` mutant), and any line that carries
``# pragma: no mutate``.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

PRAGMA = "pragma: no mutate"

_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}

# Calls that publish or move a file: a loop making them is an ordering point.
_RENAME_CALLS = frozenset({"replace", "rename", "renames", "move", "move_into_place", "link"})

_OCTAL = re.compile(r"0[oO][0-7]{3,4}")


@dataclass(frozen=True)
class Edit:
    start: int  # byte offsets into the original file
    end: int
    text: bytes


@dataclass(frozen=True)
class Mutant:
    path: str  # project-relative, POSIX separators
    line: int
    col: int
    operator: str
    original: str  # one-line excerpts for reports
    mutated: str
    edits: tuple[Edit, ...] = field(repr=False)
    end_line: int = 0  # last line the mutant touches (0: same as line)

    @property
    def lines(self) -> range:
        return range(self.line, max(self.line, self.end_line) + 1)

    @property
    def id(self) -> str:
        """Stable for one version of the file: position, operator and the edit itself."""
        h = hashlib.sha256()
        for e in self.edits:
            h.update(f"{e.start}:{e.end}:".encode() + e.text + b"\0")
        return f"{self.line}:{self.col}:{self.operator}:{h.hexdigest()[:12]}"

    def apply(self, source: bytes) -> bytes:
        out = source
        for e in sorted(self.edits, key=lambda e: e.start, reverse=True):
            out = out[: e.start] + e.text + out[e.end :]
        return out

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.operator}: {self.original} -> {self.mutated}"


def _excerpt(text: str, limit: int = 110) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


class _Source:
    """Byte offsets of AST positions (``col_offset`` counts UTF-8 bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.line_starts = [0]
        for i, b in enumerate(data):
            if b == 0x0A:
                self.line_starts.append(i + 1)

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end_line = node.end_lineno  # type: ignore[attr-defined]
        end_col = node.end_col_offset  # type: ignore[attr-defined]
        return start, self.offset(end_line, end_col)

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.data[start:end].decode()

    def line_text(self, line: int) -> str:
        start = self.line_starts[line - 1]
        end = self.line_starts[line] if line < len(self.line_starts) else len(self.data)
        return self.data[start:end].decode(errors="replace")


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _call_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def _contains_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def _bound_names(stmt: ast.stmt) -> set[str]:
    names: set[str] = set()
    for n in ast.walk(stmt):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.alias):
            names.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
    return names


def _loaded_names(stmt: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _ends_in_raise(body: Sequence[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], ast.Raise)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _int_value(node: ast.expr) -> int | None:
    """The value of an expression of integer constants only (``64 * 1024``), else None."""
    if isinstance(node, ast.Constant):
        return node.value if type(node.value) is int else None
    if isinstance(node, ast.BinOp) and isinstance(
        node.op, (ast.Add, ast.Sub, ast.Mult, ast.LShift, ast.Pow)
    ):
        left, right = _int_value(node.left), _int_value(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, (ast.LShift, ast.Pow)) and not 0 <= right <= 64:
            return None
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.LShift):
            return left << right
        return int(left**right)
    return None


def _widen_mode(value: int) -> int | None:
    if not 0 <= value <= 0o7777:
        return None
    widened = value | 0o044
    if value & 0o100:
        widened |= 0o011
    if widened == value:
        widened = value | 0o022
    return widened if widened != value else None


class _Generator:
    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.src = _Source(data)
        self.tree = ast.parse(data)
        self.out: list[Mutant] = []
        self.skip_lines = {
            i + 1 for i, line in enumerate(data.decode().splitlines()) if PRAGMA in line
        }
        self.skipped: set[int] = set()  # id() of nodes never to mutate (with their subtrees)
        self.mode_constants: dict[str, int] = {}
        for stmt in self.tree.body:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id.endswith("_MODE")
                and isinstance(stmt.value, ast.Constant)
                and type(stmt.value.value) is int
            ):
                self.mode_constants[stmt.targets[0].id] = stmt.value.value

    # -- helpers --------------------------------------------------------------------------------
    def _emit(self, node: ast.AST, operator: str, edits: list[Edit], mutated: str) -> None:
        line = node.lineno  # type: ignore[attr-defined]
        end_line = node.end_lineno  # type: ignore[attr-defined]
        if any(n in self.skip_lines for n in range(line, end_line + 1)):
            return
        original = _excerpt(self.src.text(node))
        self.out.append(
            Mutant(
                path=self.path,
                line=line,
                col=node.col_offset,  # type: ignore[attr-defined]
                operator=operator,
                original=original,
                mutated=_excerpt(mutated),
                edits=tuple(edits),
                end_line=end_line,
            )
        )

    def _replace_expr(self, node: ast.expr, new: ast.expr, operator: str) -> None:
        text = ast.unparse(new)
        start, end = self.src.span(node)
        self._emit(node, operator, [Edit(start, end, f"({text})".encode())], text)

    def _replace_stmt(self, stmt: ast.stmt, new_text: str, operator: str) -> None:
        start, end = self.src.span(stmt)
        self._emit(stmt, operator, [Edit(start, end, new_text.encode())], new_text)

    def _mark_skipped(self, node: ast.AST | None) -> None:
        if node is not None:
            for n in ast.walk(node):
                self.skipped.add(id(n))

    # -- traversal ------------------------------------------------------------------------------
    def run(self) -> list[Mutant]:
        self._prepare_skips(self.tree)
        self._visit_body(self.tree.body, in_function=False, module_level=True)
        for node in ast.walk(self.tree):
            if id(node) in self.skipped:
                continue
            self._expression_mutants(node)
        return self.out

    def _prepare_skips(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                for dec in node.decorator_list:
                    self._mark_skipped(dec)
                if not isinstance(node, ast.ClassDef):
                    self._mark_skipped(node.returns)
                    for a in [
                        *node.args.posonlyargs,
                        *node.args.args,
                        *node.args.kwonlyargs,
                        node.args.vararg,
                        node.args.kwarg,
                    ]:
                        if a is not None:
                            self._mark_skipped(a.annotation)
                if node.body and _is_docstring(node.body[0]):
                    self._mark_skipped(node.body[0])
            elif isinstance(node, ast.AnnAssign):
                self._mark_skipped(node.annotation)
            elif (
                isinstance(node, ast.JoinedStr)
                or (isinstance(node, ast.If) and _is_type_checking(node.test))
                or (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                )
            ):
                self._mark_skipped(node)
        if tree.body and _is_docstring(tree.body[0]):
            self._mark_skipped(tree.body[0])
        # Module-level tunable sizes and limits: NAME = <int, or ints only, >= 100>
        # (CHUNK = 1024 * 1024): one more or less is the same program.
        for stmt in tree.body:
            if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or stmt.value is None:
                continue
            value = _int_value(stmt.value)
            if (
                value is not None
                and abs(value) >= 100
                and not _OCTAL.fullmatch(self.src.text(stmt.value))
            ):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                if all(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
                    self._mark_skipped(stmt.value)

    def _visit_body(self, body: list[ast.stmt], *, in_function: bool, module_level: bool) -> None:
        live = [s for s in body if id(s) not in self.skipped]
        for stmt in live:
            self._statement_mutants(stmt, in_function=in_function)
        if in_function:
            for first, second in itertools.pairwise(live):
                self._swap(first, second)
        for stmt in live:
            for child_body, fn in self._child_bodies(stmt, in_function):
                self._visit_body(child_body, in_function=fn, module_level=False)

    @staticmethod
    def _child_bodies(stmt: ast.stmt, in_function: bool) -> Iterator[tuple[list[ast.stmt], bool]]:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield stmt.body, True
            return
        if isinstance(stmt, ast.ClassDef):
            yield stmt.body, False
            return
        for name in ("body", "orelse", "finalbody"):
            child = getattr(stmt, name, None)
            if isinstance(child, list) and child and isinstance(child[0], ast.stmt):
                yield child, in_function
        for handler in getattr(stmt, "handlers", []) or []:
            yield handler.body, in_function
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                yield case.body, in_function

    # -- statement operators --------------------------------------------------------------------
    def _statement_mutants(self, stmt: ast.stmt, *, in_function: bool) -> None:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            self._replace_stmt(stmt, "pass", "call-drop")
        elif isinstance(stmt, ast.Raise):
            self._replace_stmt(stmt, "pass", "raise-drop")
        elif isinstance(stmt, ast.If) and not stmt.orelse and _ends_in_raise(stmt.body):
            if len(stmt.body) == 1:  # guard-drop makes the raise-drop of it redundant
                self.skipped.add(id(stmt.body[0]))
                self._replace_stmt(stmt, "pass", "guard-drop")
            else:
                self._replace_stmt(stmt, "pass", "guard-drop")
        elif isinstance(stmt, ast.Return) and stmt.value is not None and in_function:
            value = stmt.value
            if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                self._replace_stmt(stmt, f"return {not value.value}", "return")
            elif not (isinstance(value, ast.Constant) and value.value is None):
                self._replace_stmt(stmt, "return None", "return")
        elif isinstance(stmt, ast.For):
            self._order(stmt)

    def _order(self, loop: ast.For) -> None:
        it = loop.iter
        if isinstance(it, (ast.Tuple, ast.List)) and len(it.elts) >= 2:
            rev = type(it)(elts=list(reversed(it.elts)), ctx=ast.Load())
            self._replace_expr(it, rev, "order")
            return
        renames = any(
            isinstance(n, ast.Call) and _call_name(n) in _RENAME_CALLS
            for s in loop.body
            for n in ast.walk(s)
        )
        if renames:
            new = ast.Call(
                func=ast.Name("reversed", ast.Load()),
                args=[ast.Call(func=ast.Name("list", ast.Load()), args=[it], keywords=[])],
                keywords=[],
            )
            self._replace_expr(it, new, "order")

    def _swap(self, first: ast.stmt, second: ast.stmt) -> None:
        for s in (first, second):
            if _is_docstring(s) or isinstance(
                s,
                (
                    ast.Pass,
                    ast.Import,
                    ast.ImportFrom,
                    ast.Global,
                    ast.Nonlocal,
                    # a nested def or class only binds a name: moving it past an independent
                    # statement changes nothing, past a dependent one it is a NameError
                    ast.FunctionDef,
                    ast.AsyncFunctionDef,
                    ast.ClassDef,
                ),
            ):
                return
        if isinstance(second, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
            return  # the first would only become dead code: a call-drop, or a NameError
        if not (_contains_call(first) or _contains_call(second)):
            return
        if _bound_names(first) & _loaded_names(second):
            return  # the second would read an unbound or stale name: killed for nothing
        if first.lineno == second.lineno or first.col_offset != second.col_offset:
            return
        if any(n in self.skip_lines for n in (first.lineno, second.lineno)):
            return
        a_start, a_end = self.src.span(first)
        b_start, b_end = self.src.span(second)
        data = self.src.data
        between = data[a_end:b_start]
        if b"\\" in between:
            return
        new = data[b_start:b_end] + between + data[a_start:a_end]
        a_text = _excerpt(self.src.text(first), 50)
        b_text = _excerpt(self.src.text(second), 50)
        line = first.lineno
        if any(n in self.skip_lines for n in range(line, second.end_lineno or line + 1)):
            return
        self.out.append(
            Mutant(
                path=self.path,
                line=line,
                col=first.col_offset,
                operator="swap",
                original=f"{a_text} ; {b_text}",
                mutated=f"{b_text} ; {a_text}",
                edits=(Edit(a_start, b_end, new),),
                end_line=second.end_lineno or line,
            )
        )

    # -- expression operators -------------------------------------------------------------------
    def _expression_mutants(self, node: ast.AST) -> None:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                swapped = _COMPARE_SWAP.get(type(op))
                if swapped is None:
                    continue
                ops = list(node.ops)
                ops[i] = swapped()
                new = ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
                self._replace_expr(node, new, "compare")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._replace_expr(node, node.operand, "not-drop")
        elif isinstance(node, ast.BoolOp):
            other: ast.boolop = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self._replace_expr(node, ast.BoolOp(op=other, values=node.values), "and-or")
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            test = node.test
            if id(test) in self.skipped or isinstance(test, ast.Constant):
                return  # ``while True``: negating it says nothing
            if not (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)):
                self._replace_expr(test, ast.UnaryOp(op=ast.Not(), operand=test), "not-insert")
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            self._int(node)
        elif isinstance(node, ast.Name) and node.id in self.mode_constants:
            self._mode_name(node)
        elif isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
            value = node.value.value
            if isinstance(value, bool) and node.arg and id(node.value) not in self.skipped:
                text = f"{node.arg}={not value}"
                start, end = self.src.span(node)
                self._emit(node, "flag", [Edit(start, end, text.encode())], text)

    def _int(self, node: ast.Constant) -> None:
        value = node.value
        if not isinstance(value, int):
            return
        text = self.src.text(node)
        if _OCTAL.fullmatch(text):
            widened = _widen_mode(value)
            if widened is not None:
                start, end = self.src.span(node)
                new = f"0o{widened:o}"
                self._emit(node, "mode", [Edit(start, end, new.encode())], new)
            return
        for delta in (1, -1):
            if value + delta < 0:
                continue
            new_value = value + delta
            start, end = self.src.span(node)
            new = hex(new_value) if text.lower().startswith("0x") else str(new_value)
            self._emit(node, "int", [Edit(start, end, new.encode())], new)

    def _mode_name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            return
        value = self.mode_constants[node.id]
        wider = [
            (bin(v).count("1"), name)
            for name, v in self.mode_constants.items()
            if v != value and v | value == v
        ]
        if wider:
            name = min(wider)[1]
            start, end = self.src.span(node)
            self._emit(node, "mode-name", [Edit(start, end, name.encode())], name)


def python_mutants(path: str, data: bytes) -> list[Mutant]:
    """Every mutant of one Python file, each checked to compile, in source order, deduplicated."""
    found = _Generator(path, data).run()
    seen: set[bytes] = {data}
    out: list[Mutant] = []
    for m in sorted(found, key=lambda m: (m.line, m.col, m.operator, m.mutated)):
        mutated = m.apply(data)
        if mutated in seen:
            continue
        try:
            compile(mutated, path, "exec", dont_inherit=True)
        except SyntaxError:
            continue
        seen.add(mutated)
        out.append(m)
    return out


_JINJA_CONTROL = re.compile(r"^\s*(\{%.*%\}|\{#.*#\})\s*$")


def template_mutants(path: str, data: bytes) -> list[Mutant]:
    """``line-drop`` mutants of a Jinja template: each meaningful line removed in turn."""
    out: list[Mutant] = []
    offset = 0
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        text = line.decode(errors="replace")
        stripped = text.strip()
        start = offset
        offset += len(line)
        if (
            not stripped
            or stripped.startswith("#")
            or stripped.startswith("<!--")
            or _JINJA_CONTROL.match(text)
            or PRAGMA in text
            or stripped in {"fi", "done", "esac", "else", "then", "do", ";;", "}", "{"}
            or stripped.startswith("</")
        ):
            continue
        out.append(
            Mutant(
                path=path,
                line=number,
                col=0,
                operator="line-drop",
                original=_excerpt(stripped),
                mutated="(line removed)",
                edits=(Edit(start, offset, b""),),
            )
        )
    return out


def mutants_for(path: str, data: bytes) -> list[Mutant]:
    if path.endswith(".py"):
        return python_mutants(path, data)
    return template_mutants(path, data)

"""Check a rule expression against the language's whitelist and type it.

The text is parsed with ``ast.parse(mode="eval")`` and the tree is walked node by node: only
the constructs listed in ``_visit`` are accepted, everything else raises StrategyError with the
column where it starts. The result is a small typed tree (``Node`` subclasses) that the compiler
evaluates over numpy arrays. Nothing here evaluates, ``eval``s or ``exec``s anything.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from backtester.engine.errors import StrategyError
from backtester.engine.language.functions import (
    BOOL_NAMES,
    BUILTIN_COLUMNS,
    FUNCTIONS,
    ArgSpec,
    FunctionSpec,
    Type,
)
from backtester.engine.language.spec import Param

MAX_LENGTH = 2_000
MAX_NODES = 400
MAX_DEPTH = 100
# Integer literals beyond this would lose precision as floats; nothing sane needs them.
MAX_INT = 10**15

_PARAM_TYPES = {"int": Type.INT, "float": Type.FLOAT, "bool": Type.BOOL}

_ARITHMETIC = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Mod: "%",
    ast.Pow: "**",
}
_UNSUPPORTED_ARITHMETIC = {
    ast.BitAnd: ("&", "use 'and' instead of '&'"),
    ast.BitOr: ("|", "use 'or' instead of '|'"),
    ast.BitXor: ("^", "'^' is not supported; use '**' for powers"),
    ast.FloorDiv: ("//", "'//' is not supported; use '/'"),
    ast.MatMult: ("@", "'@' is not supported"),
    ast.LShift: ("<<", "'<<' is not supported"),
    ast.RShift: (">>", "'>>' is not supported"),
}
_COMPARISONS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_UNSUPPORTED_COMPARISONS = {
    ast.Is: ("is", "'is' is not supported; use == or !="),
    ast.IsNot: ("is", "'is not' is not supported; use !="),
    ast.In: ("in", "'in' is not supported"),
    ast.NotIn: ("not", "'not in' is not supported"),
}
# Constructs refused outright, with the reason shown to the user.
_REFUSED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "use shift(x, n) instead of subscripts",
    ast.Slice: "use shift(x, n) instead of subscripts",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.FormattedValue: "strings are not allowed",
    ast.Starred: "starred expressions (*x) are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.IfExp: "'x if c else y' is not supported; combine conditions with and/or/not",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}


# --- the typed tree the compiler evaluates ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A checked sub-expression: where it starts in the text and what it evaluates to."""

    col: int
    type: Type


@dataclass(frozen=True, slots=True)
class Const(Node):
    """A number or true/false written in the rule (or a default argument)."""

    value: int | float | bool


@dataclass(frozen=True, slots=True)
class ParamRef(Node):
    """A declared parameter; its value is known before any bar is read."""

    name: str


@dataclass(frozen=True, slots=True)
class ColumnRef(Node):
    """A candle column (built-in, typical price or extra)."""

    name: str


@dataclass(frozen=True, slots=True)
class Unary(Node):
    """``-x``, ``+x`` or ``not x``."""

    op: str  # "-", "+" or "not"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """Arithmetic between two numbers or series."""

    op: str  # one of _ARITHMETIC's values
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Comparison(Node):
    """A comparison, possibly chained."""

    ops: tuple[str, ...]  # a < b <= c is two ops over three operands
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Logic(Node):
    """``and``/``or`` over two or more conditions."""

    op: str  # "and" or "or"
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Call(Node):
    """A call of a whitelisted function."""

    func: FunctionSpec
    args: tuple[Node, ...]  # defaults filled in


# --- checking -------------------------------------------------------------------------------


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _unknown_name(name: str, known: Iterable[str]) -> str:
    """The message for a bare name the rule cannot resolve: the closest parameter, column or
    function when one is close, and the way to make it a tunable value."""
    names = list(dict.fromkeys(known))
    close = difflib.get_close_matches(name, [*names, *FUNCTIONS], n=1)
    hint = ""
    if close and close[0] in FUNCTIONS and close[0] not in names:
        hint = f"; did you mean the function {close[0]}{FUNCTIONS[close[0]].signature}?"
    elif close:
        hint = f"; did you mean '{close[0]}'?"
    return (
        f"unknown name '{name}'{hint or '.'} If '{name}' is a value you want to set or optimize, "
        "declare it as a parameter of the strategy."
    )


# Operators spelled the way other languages or habits spell them, and this language's spelling.
_OPERATOR_TYPOS = (("=<", "<="), ("=>", ">="), ("<>", "!="), ("=", "=="))
_LONE_EQUALS = re.compile(r"(?<![=!<>])=(?![=<>])")


def _operator_hint(source: str) -> tuple[int, str, str] | None:
    """(offset, written, meant) for the first misspelt comparison in ``source``, if any."""
    found: list[tuple[int, str, str]] = []
    for written, meant in _OPERATOR_TYPOS:
        if written == "=":
            match = _LONE_EQUALS.search(source)
            if match is not None:
                found.append((match.start(), written, meant))
        else:
            at = source.find(written)
            if at >= 0:
                found.append((at, written, meant))
    return min(found) if found else None


def _arity(func: FunctionSpec, got: int) -> str:
    total, required = len(func.args), func.required
    if total == 0:
        return f"{func.name} takes no arguments, got {got}"
    if required == total:
        count = f"{total} argument{'s' if total != 1 else ''}"
    else:
        count = f"{required} to {total} arguments"
    return f"{func.name} takes {count} {func.signature}, got {got}"


class _Checker:
    """One pass over one expression; holds the text for column arithmetic."""

    def __init__(
        self,
        expr: str,
        text: str,
        lead: int,
        params: Mapping[str, Type],
        columns: frozenset[str],
        field: str | None,
    ) -> None:
        self.expr = expr  # as typed, for error reports
        self.lead = lead  # leading blanks stripped before parsing
        self.source = text[lead:].encode("utf-8")
        self.ascii = text.isascii()
        self.params = params
        self.columns = columns
        self.field = field

    def error(self, message: str, col: int | None) -> StrategyError:
        return StrategyError(message, col=col, expression=self.expr, field=self.field)

    def col(self, byte_offset: int) -> int:
        """ast offsets count UTF-8 bytes; users count characters."""
        if self.ascii:
            return self.lead + byte_offset
        return self.lead + len(self.source[:byte_offset].decode("utf-8", "ignore"))

    def at(self, node: ast.AST) -> int:
        return self.col(getattr(node, "col_offset", 0))

    def find(self, token: str, start: int, stop: int) -> int:
        """Column of ``token`` between two byte offsets (an operator has no position of its own)."""
        i = self.source.find(token.encode(), start, stop)
        return self.col(start if i < 0 else i)

    # Each visit returns the typed node or raises.
    def visit(self, node: ast.AST) -> Node:
        if isinstance(node, ast.BoolOp):
            return self.bool_op(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        message = _REFUSED.get(type(node), f"{type(node).__name__} is not allowed")
        col = self.at(node)
        if isinstance(node, ast.Attribute | ast.Subscript):
            token = "." if isinstance(node, ast.Attribute) else "["
            col = self.find(token, node.value.end_col_offset or 0, node.end_col_offset or 0)
        raise self.error(message, col)

    def bool_op(self, node: ast.BoolOp) -> Node:
        op = "and" if isinstance(node.op, ast.And) else "or"
        operands = tuple(self.visit(v) for v in node.values)
        for ast_node, typed in zip(node.values, operands, strict=True):
            if not typed.type.is_bool:
                raise self.error(
                    f"'{op}' combines conditions, but this is {typed.type.value}; "
                    "compare it with something, e.g. close > 0",
                    self.at(ast_node),
                )
        series = any(t.type.is_series for t in operands)
        return Logic(self.at(node), Type.CONDITION if series else Type.BOOL, op, operands)

    def unary(self, node: ast.UnaryOp) -> Node:
        col = self.at(node)
        if isinstance(node.op, ast.Invert):
            raise self.error("use 'not' instead of '~'", col)
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            if not operand.type.is_bool:
                raise self.error(
                    f"'not' needs a condition, but this is {operand.type.value}",
                    self.at(node.operand),
                )
            return Unary(col, operand.type, "not", operand)
        sign = "-" if isinstance(node.op, ast.USub) else "+"
        if not operand.type.is_numeric:
            raise self.error(
                f"'{sign}' needs a number, but this is {operand.type.value}",
                self.at(node.operand),
            )
        if isinstance(operand, Const):
            # Fold signed literals so -5 is a constant like 5 (periods, cache keys).
            value = operand.value if sign == "+" else -operand.value
            return Const(col, operand.type, value)
        return Unary(col, operand.type, sign, operand)

    def binary(self, node: ast.BinOp) -> Node:
        start, stop = node.left.end_col_offset or 0, node.right.col_offset
        unsupported = _UNSUPPORTED_ARITHMETIC.get(type(node.op))
        if unsupported is not None:
            token, message = unsupported
            raise self.error(message, self.find(token, start, stop))
        op = _ARITHMETIC[type(node.op)]
        left, right = self.visit(node.left), self.visit(node.right)
        for ast_node, typed in ((node.left, left), (node.right, right)):
            if not typed.type.is_numeric:
                raise self.error(
                    f"'{op}' needs numbers on both sides, but this is {typed.type.value}",
                    self.at(ast_node),
                )
        if left.type is Type.SERIES or right.type is Type.SERIES:
            result = Type.SERIES
        elif op in ("/", "**"):
            # Powers stay out of integer arithmetic so 10 ** 10 ** 10 cannot eat the CPU.
            result = Type.FLOAT
        elif left.type is Type.INT and right.type is Type.INT:
            result = Type.INT
        else:
            result = Type.FLOAT
        return Binary(self.at(node), result, op, left, right)

    def compare(self, node: ast.Compare) -> Node:
        ops: list[str] = []
        previous: ast.expr = node.left
        for op_node, right in zip(node.ops, node.comparators, strict=True):
            unsupported = _UNSUPPORTED_COMPARISONS.get(type(op_node))
            if unsupported is not None:
                token, message = unsupported
                where = self.find(token, previous.end_col_offset or 0, right.col_offset)
                raise self.error(message, where)
            ops.append(_COMPARISONS[type(op_node)])
            previous = right
        ast_operands = [node.left, *node.comparators]
        operands = tuple(self.visit(v) for v in ast_operands)
        for ast_node, typed in zip(ast_operands, operands, strict=True):
            if not typed.type.is_numeric:
                raise self.error(
                    f"comparisons need numbers, but this is {typed.type.value}; "
                    "combine conditions with and/or/not",
                    self.at(ast_node),
                )
        series = any(t.type.is_series for t in operands)
        return Comparison(
            self.at(node), Type.CONDITION if series else Type.BOOL, tuple(ops), operands
        )

    def call(self, node: ast.Call) -> Node:
        col = self.at(node)
        if not isinstance(node.func, ast.Name):
            # An attribute, lambda, subscript... is refused by its own rule first.
            self.visit(node.func)
            raise self.error("only named functions can be called", col)
        name = node.func.id
        func = FUNCTIONS.get(name)
        if func is None:
            if name in self.params or name in self.columns or name in BUILTIN_COLUMNS:
                raise self.error(f"'{name}' is not a function", col)
            raise self.error(f"unknown function '{name}'{_suggest(name, FUNCTIONS)}", col)
        if node.keywords:
            kw = node.keywords[0]
            raise self.error(
                f"keyword arguments are not allowed; pass {func.name}'s arguments by position "
                f"{func.signature}",
                self.at(kw),
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error(_REFUSED[ast.Starred], self.at(arg))
        given = len(node.args)
        if not func.required <= given <= len(func.args):
            raise self.error(_arity(func, given), col)
        args: list[Node] = []
        for i, spec in enumerate(func.args):
            if i < given:
                args.append(self.argument(func, spec, node.args[i]))
            else:
                assert spec.default is not None
                kind = Type.INT if isinstance(spec.default, int) else Type.FLOAT
                args.append(Const(col, kind, spec.default))
        result = func.result_type([a.type for a in args])
        return Call(col, result, func, tuple(args))

    def argument(self, func: FunctionSpec, spec: ArgSpec, node: ast.expr) -> Node:
        typed = self.visit(node)
        col = self.at(node)
        t = typed.type
        what = f"{func.name} {spec.name}"
        if spec.kind == "series" and t is not Type.SERIES:
            hint = "; use a column such as close" if t.is_numeric else ""
            raise self.error(f"{what} must be a number series, got {t.value}{hint}", col)
        if spec.kind == "numeric" and not t.is_numeric:
            raise self.error(f"{what} must be a number or number series, got {t.value}", col)
        if spec.kind == "shiftable" and not t.is_series:
            raise self.error(f"{what} must be a series or a condition, got {t.value}", col)
        if spec.kind == "number" and t not in (Type.INT, Type.FLOAT):
            raise self.error(
                f"{what} must be a single number (a constant or a parameter), got {t.value}", col
            )
        if spec.kind == "int":
            if isinstance(typed, Const) and t is Type.FLOAT and float(typed.value).is_integer():
                if abs(float(typed.value)) > MAX_INT:  # 1e308 would become a 309-digit int
                    raise self.error(f"number too large (at most {MAX_INT:.0e})", col)
                typed = Const(typed.col, Type.INT, int(typed.value))
            elif t is not Type.INT:
                got = t.value
                if isinstance(typed, ParamRef):
                    got = f"the {t.name.lower()} parameter '{typed.name}'"
                raise self.error(
                    f"{what} must be a whole number (a constant or an int parameter), got {got}",
                    col,
                )
            if isinstance(typed, Const):
                problem = int_argument_problem(func, spec, int(typed.value))
                if problem is not None:
                    raise self.error(problem, col)
        return typed

    def name(self, node: ast.Name) -> Node:
        name, col = node.id, self.at(node)
        if name in self.params:
            return ParamRef(col, self.params[name], name)
        if name in BUILTIN_COLUMNS or name in self.columns:
            return ColumnRef(col, Type.SERIES, name)
        if name in BOOL_NAMES:
            return Const(col, Type.BOOL, BOOL_NAMES[name])
        if name in FUNCTIONS:
            func = FUNCTIONS[name]
            raise self.error(f"'{name}' is a function; call it as {name}{func.signature}", col)
        known = [*self.params, *BUILTIN_COLUMNS, *self.columns]
        raise self.error(_unknown_name(name, known), col)

    def constant(self, node: ast.Constant) -> Node:
        value, col = node.value, self.at(node)
        if isinstance(value, bool):
            return Const(col, Type.BOOL, value)
        if isinstance(value, int):
            if abs(value) > MAX_INT:
                raise self.error(f"number too large (at most {MAX_INT:.0e})", col)
            return Const(col, Type.INT, value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.error("number too large", col)
            return Const(col, Type.FLOAT, value)
        if isinstance(value, str | bytes):
            raise self.error("strings are not allowed", col)
        if isinstance(value, complex):
            raise self.error("complex numbers are not allowed", col)
        if value is None:
            raise self.error("None is not allowed", col)
        raise self.error(f"{value!r} is not allowed", col)


def int_argument_problem(func: FunctionSpec, spec: ArgSpec, value: int) -> str | None:
    """Why a whole-number argument is outside its declared minimum/maximum, or None."""
    if spec.minimum is not None and value < spec.minimum:
        return f"{func.name} {spec.name} must be at least {spec.minimum}, got {value}"
    if spec.maximum is not None and value > spec.maximum:
        return f"{func.name} {spec.name} must be at most {spec.maximum}, got {value}"
    return None


def _prepare(expr: str, field: str | None) -> tuple[str, int]:
    """Check raw text limits; return it with line breaks as blanks and the leading-blank count."""
    if not isinstance(expr, str):
        raise StrategyError("an expression must be text", field=field)
    if len(expr) > MAX_LENGTH:
        raise StrategyError(
            f"expression is too long ({len(expr)} characters; at most {MAX_LENGTH})",
            col=MAX_LENGTH,
            expression=expr,
            field=field,
        )
    for i, ch in enumerate(expr):
        if not ch.isprintable() and ch not in "\t\r\n":
            raise StrategyError(
                f"unexpected control character {ch!r}", col=i, expression=expr, field=field
            )
    # One blank per break keeps every column pointing at the same character of ``expr``, and
    # lets a long rule span several lines without wrapping it in parentheses.
    text = expr.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text, len(text) - len(text.lstrip(" "))


def parse_rule(
    expr: str,
    *,
    params: Mapping[str, str],
    columns: Iterable[str] = (),
    field: str | None = None,
    condition: bool = True,
) -> Node | None:
    """Check one rule and return its typed tree, or None for an empty rule (never fires).

    ``params`` maps parameter names to their kind ("int", "float", "bool"); ``columns`` are
    extra candle columns beyond the built-in ones. Raises StrategyError (with ``col``) for
    anything outside the language, or for a rule that is not a condition when ``condition``.
    """
    text, lead = _prepare(expr, field)
    if not text.strip():
        return None
    try:
        tree = ast.parse(text[lead:], mode="eval")
    except SyntaxError as exc:
        typo = _operator_hint(text[lead:])
        if typo is not None:
            at, written, meant = typo
            raise StrategyError(
                f"syntax error: '{written}' is not an operator here; did you mean '{meant}'?",
                col=lead + at,
                expression=expr,
                field=field,
            ) from None
        offset = exc.offset if exc.offset and 0 < exc.offset <= len(text) - lead else None
        col = lead + offset - 1 if offset is not None else len(text.rstrip())
        raise StrategyError(
            f"syntax error: {exc.msg}", col=col, expression=expr, field=field
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise StrategyError(
            "expression is too complex to read", col=0, expression=expr, field=field
        ) from None
    _check_size(tree, expr, field)
    types = {}
    for name, kind in params.items():
        if kind not in _PARAM_TYPES:
            raise StrategyError(f"unknown parameter kind {kind!r}", field=name)
        types[name] = _PARAM_TYPES[kind]
    checker = _Checker(expr, text, lead, types, frozenset(columns), field)
    node = checker.visit(tree.body)
    if condition and not node.type.is_bool:
        raise StrategyError(
            f"a rule must be a condition (true/false), but this is {node.type.value}; "
            "compare it with something, e.g. close > sma(close, 20)",
            col=node.col,
            expression=expr,
            field=field,
        )
    return node


def _check_size(tree: ast.AST, expr: str, field: str | None) -> None:
    """Bound the tree before walking it recursively (the walk must not hit Python's limit)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            count += 1
            if count > MAX_NODES:
                raise StrategyError(
                    f"expression is too large (more than {MAX_NODES} parts)",
                    col=0,
                    expression=expr,
                    field=field,
                )
        if depth > MAX_DEPTH:
            raise StrategyError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)",
                col=0,
                expression=expr,
                field=field,
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def param_kinds(params: Iterable[Param | str]) -> dict[str, str]:
    """Name → kind for declared params; a bare name counts as an int (usable anywhere a number
    or a period is)."""
    kinds: dict[str, str] = {}
    for p in params:
        if isinstance(p, Param):
            kinds[p.name] = p.kind
        else:
            kinds[str(p)] = "int"
    return kinds


def validate_expression(
    expr: str,
    *,
    params: Iterable[Param | str],
    columns: Iterable[str] = (),
    field: str | None = None,
) -> None:
    """Raise StrategyError if ``expr`` is not a valid rule; an empty rule is valid.

    A static check without data: names, functions, argument counts and types. ``params`` are
    Param objects or bare names (treated as int); ``columns`` are extra candle columns. Limits
    that depend on data or parameter values (a period longer than the data) are checked by
    ``compile_strategy``.
    """
    parse_rule(expr, params=param_kinds(params), columns=columns, field=field)

"""What a strategy is: four rule expressions and the parameters they may refer to.

``Param`` declares one tunable value (type, default and an optional range for optimization);
``StrategySpec`` bundles the rules with their params. Neither touches data: rules are checked
and compiled by ``parser``/``compiler``, parameters are checked here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from backtester.engine.errors import StrategyError
from backtester.engine.language.functions import RESERVED_NAMES

ParamKind = Literal["int", "float", "bool"]
ParamValue = int | float | bool

RULES: tuple[str, ...] = ("entry_long", "exit_long", "entry_short", "exit_short")
PARAM_KINDS: tuple[str, ...] = ("int", "float", "bool")
# A single parameter's optimization grid is capped so a typo in a range cannot make the grid
# (which multiplies these counts together) explode.
MAX_PARAM_VALUES = 10_000
# Bounds and defaults are at most this large in magnitude (the rule language's own literal
# limit), so grid sizes and periods stay machine integers.
MAX_PARAM_MAGNITUDE = 10**15
# Floats on a grid are rounded so 0.1 + 0.2 style drift does not produce 0.30000000000000004.
_GRID_DECIMALS = 10
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class Param:
    """A declared strategy parameter.

    ``kind`` is "int", "float" or "bool". ``low``/``high`` bound the accepted values (inclusive)
    and, with ``step``, span the optimization grid returned by ``values()``.
    """

    name: str
    kind: ParamKind
    default: ParamValue
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise StrategyError(
                f"parameter name {name!r} must start with a letter and hold only letters, "
                "digits and underscores (at most 40 characters)",
                field=str(name),
            )
        if name in RESERVED_NAMES:
            raise StrategyError(
                f"parameter name '{name}' is already a column or function name; pick another",
                field=name,
            )
        if self.kind not in PARAM_KINDS:
            raise StrategyError(
                f"parameter kind must be one of int, float, bool; got {self.kind!r}", field=name
            )
        if self.kind == "bool":
            if not isinstance(self.default, bool):
                raise StrategyError("default of a bool parameter must be true or false", field=name)
            if (self.low, self.high, self.step) != (None, None, None):
                raise StrategyError("a bool parameter takes no low, high or step", field=name)
            return
        for attr in ("default", "low", "high", "step"):
            value = getattr(self, attr)
            if value is None and attr != "default":
                continue
            if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
                raise StrategyError(f"{attr} of parameter '{name}' must be a number", field=name)
            if abs(value) > MAX_PARAM_MAGNITUDE:
                raise StrategyError(
                    f"{attr} of parameter '{name}' is too large (at most "
                    f"{MAX_PARAM_MAGNITUDE:.0e} in size)",
                    field=name,
                )
            if self.kind == "int" and value != int(value):
                raise StrategyError(
                    f"{attr} of int parameter '{name}' must be a whole number, got {value!r}",
                    field=name,
                )
            # Normalise so an int param always holds ints and a float param floats.
            object.__setattr__(self, attr, int(value) if self.kind == "int" else float(value))
        if self.low is not None and self.high is not None and self.low > self.high:
            raise StrategyError(
                f"low {_fmt(self.low)} of parameter '{name}' is above high {_fmt(self.high)}",
                field=name,
            )
        if self.step is not None and self.step <= 0:
            raise StrategyError(f"step of parameter '{name}' must be positive", field=name)
        self._check_range(self.default, "default")
        count = len(self._grid())
        if count > MAX_PARAM_VALUES:
            raise StrategyError(
                f"parameter '{name}' spans {count} grid values; at most {MAX_PARAM_VALUES} "
                "(use a larger step or a narrower range)",
                field=name,
            )

    def _check_range(self, value: ParamValue, what: str) -> None:
        low, high = self.low, self.high
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                allowed = f"between {_fmt(low)} and {_fmt(high)}"
            elif low is not None:
                allowed = f"at least {_fmt(low)}"
            else:
                assert high is not None
                allowed = f"at most {_fmt(high)}"
            raise StrategyError(
                f"{what} of '{self.name}' must be {allowed}, got {_fmt(value)}", field=self.name
            )

    def _grid(self) -> range | tuple[ParamValue, ...]:
        if self.kind == "bool":
            return (False, True)
        if self.low is None or self.high is None:
            return (self.default,)
        if self.kind == "int":
            return range(int(self.low), int(self.high) + 1, int(self.step or 1))
        low, high = float(self.low), float(self.high)
        if low == high:
            return (low,)
        step = float(self.step) if self.step is not None else (high - low) / 4
        # The small tolerance keeps ``high`` on the grid when (high - low) / step is whole but
        # rounds down by one ulp.
        ratio = (high - low) / step
        if not math.isfinite(ratio) or ratio > MAX_PARAM_MAGNITUDE:
            # A tiny step over a wide range (0..1e300 by 1e-300): far more values than any grid
            # may hold, and too many to count as a machine integer.
            return range(MAX_PARAM_MAGNITUDE)
        count = math.floor(ratio + 1e-9) + 1
        if count > MAX_PARAM_VALUES:
            return range(count)  # only its length is looked at; __post_init__ refuses it
        return tuple(round(low + i * step, _GRID_DECIMALS) for i in range(count))

    def values(self) -> tuple[ParamValue, ...]:
        """The optimization grid: ``low..high`` by ``step`` (int step defaults to 1, float step to
        a quarter of the range), ``(False, True)`` for bool, ``(default,)`` without a range."""
        return tuple(self._grid())

    def coerce(self, value: object) -> ParamValue:
        """``value`` converted to this parameter's kind and checked against its range.

        Strings are accepted as they come from a command line or a form ("10", "2.5", "true").
        Raises StrategyError with ``field`` set to the parameter name.
        """
        name = self.name
        got = value
        if isinstance(value, str):
            text = value.strip()
            if self.kind == "bool":
                if text.lower() in _TRUE:
                    return True
                if text.lower() in _FALSE:
                    return False
                raise StrategyError(f"'{name}' must be true or false, got {value!r}", field=name)
            try:
                got = float(text) if self.kind == "float" else int(text)
            except ValueError:
                try:
                    got = float(text)
                except ValueError:
                    raise StrategyError(
                        f"'{name}' must be a number, got {value!r}", field=name
                    ) from None
        if self.kind == "bool":
            if isinstance(got, bool):
                return got
            raise StrategyError(f"'{name}' must be true or false, got {value!r}", field=name)
        if not _is_number(got):
            raise StrategyError(f"'{name}' must be a number, got {value!r}", field=name)
        assert isinstance(got, int | float)
        if not math.isfinite(got):
            raise StrategyError(f"'{name}' must be a finite number, got {value!r}", field=name)
        result: int | float
        if self.kind == "int":
            if got != int(got):
                raise StrategyError(f"'{name}' must be a whole number, got {value!r}", field=name)
            result = int(got)
        else:
            result = float(got)
        self._check_range(result, "value")
        return result


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """A strategy in the language: up to four rules (an empty rule never fires) and params.

    Each rule is an expression that must evaluate to a condition per bar, e.g.
    ``cross_above(ema(close, fast), ema(close, slow)) and rsi(close, 14) < 70``.
    """

    name: str
    entry_long: str = ""
    exit_long: str = ""
    entry_short: str = ""
    exit_short: str = ""
    params: tuple[Param, ...] = field(default_factory=tuple)
    description: str = ""

    def __post_init__(self) -> None:
        params = tuple(self.params)
        for p in params:
            if not isinstance(p, Param):
                raise StrategyError(f"params must hold Param objects, got {p!r}", field="params")
        seen: set[str] = set()
        for p in params:
            if p.name in seen:
                raise StrategyError(f"parameter '{p.name}' is declared twice", field=p.name)
            seen.add(p.name)
        for rule in RULES:
            if not isinstance(getattr(self, rule), str):
                raise StrategyError("a rule must be text", field=rule)
        object.__setattr__(self, "params", params)

    @property
    def rules(self) -> dict[str, str]:
        """The four rule expressions by name, empty ones included."""
        return {rule: getattr(self, rule) for rule in RULES}

    def param(self, name: str) -> Param:
        """The declared parameter called ``name`` (KeyError if none)."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, ParamValue]:
        """Every parameter at its default value."""
        return {p.name: p.default for p in self.params}

    def resolve_params(self, overrides: Mapping[str, object]) -> dict[str, ParamValue]:
        """Defaults overlaid with ``overrides``, each converted and range-checked.

        Unknown names, values of the wrong type and values outside ``low..high`` raise
        StrategyError with ``field`` set to the parameter name.
        """
        declared = {p.name: p for p in self.params}
        for key in overrides:
            if key not in declared:
                hint = difflib.get_close_matches(str(key), list(declared), n=1)
                known = ", ".join(declared) or "none"
                suffix = f"; did you mean '{hint[0]}'?" if hint else f" (declared: {known})"
                raise StrategyError(f"unknown parameter '{key}'{suffix}", field=str(key))
        return {
            name: p.coerce(overrides[name]) if name in overrides else p.default
            for name, p in declared.items()
        }

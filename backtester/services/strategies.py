"""Writes for strategies: create, update, delete, start from a preset.

Every rule is checked with the engine's strategy language against the declared parameters
before anything is saved; a bad rule raises ApplicationError whose ``field`` names the rule
(``entry_long``...) and whose message says what is wrong and at which column. A strategy is
stored with its parameter declarations (``Strategy.params``, the dicts of ``param_to_dict``)
and the values it runs with by default (``Strategy.param_values``, every declared name).

The helpers ``strategy_spec``, ``spec_to_dict`` and ``spec_from_dict`` convert between the
model, the engine's ``StrategySpec`` and the JSON snapshot a Backtest keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from django.db import transaction
from django.db.models import Q

from accounts.gating import require_pro
from accounts.models import User
from backtester.engine.errors import StrategyError
from backtester.engine.language import (
    PRESETS,
    RULES,
    Param,
    ParamValue,
    StrategySpec,
    validate_expression,
    validate_strategy,
)
from backtester.models import MarketSeries, Strategy
from config.exceptions import ApplicationError, NotFound

NAME_MAX = 120
DESCRIPTION_MAX = 4000
PARAMS_MAX = 20
PARAM_DESCRIPTION_MAX = 200

# Human names of the built-in presets (the engine keys them by slug).
PRESET_LABELS: dict[str, str] = {
    "sma_cross": "SMA crossover",
    "ema_cross": "EMA crossover",
    "rsi_reversion": "RSI mean reversion",
    "rsi_ma_filter": "RSI reversion with trend filter",
    "macd_cross": "MACD crossover",
    "bollinger_reversion": "Bollinger band reversion",
    "donchian_breakout": "Donchian breakout",
    "polyband_reversion": "Polynomial band reversion",
}

_UNSET: Any = object()
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def preset_label(name: str) -> str:
    """The display name of preset ``name``."""
    return PRESET_LABELS.get(name, name.replace("_", " ").capitalize())


# --- conversions ----------------------------------------------------------------------------


def param_to_dict(param: Param) -> dict[str, Any]:
    """A declared parameter as the JSON stored in ``Strategy.params`` and snapshots."""
    return asdict(param)


def _number(value: Any, *, kind: str, what: str, name: str) -> int | float | None:
    """``value`` (a number or form text) as an int/float, None when blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ApplicationError(f"parameter '{name}': {what} must be a number", field="params")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ApplicationError(
                f"parameter '{name}': {what} must be a number, got {value.strip()!r}",
                field="params",
            ) from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ApplicationError(f"parameter '{name}': {what} must be a number", field="params")
    if not math.isfinite(number):
        raise ApplicationError(f"parameter '{name}': {what} must be finite", field="params")
    if kind == "int":
        if number != int(number):
            raise ApplicationError(
                f"parameter '{name}': {what} of an int parameter must be a whole number, "
                f"got {value!r}",
                field="params",
            )
        return int(number)
    return number


def _bool(value: Any, *, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ApplicationError(
        f"parameter '{name}': the default of a bool parameter must be true or false",
        field="params",
    )


def param_from_dict(data: Mapping[str, Any]) -> Param:
    """A ``Param`` from a dict as the API sends it or a form row gives it (text is accepted).

    Raises ApplicationError(field="params") naming the parameter.
    """
    name = str(data.get("name") or "").strip()
    if not name:
        raise ApplicationError("every parameter needs a name", field="params")
    kind = str(data.get("kind") or "int").strip().lower()
    if kind not in ("int", "float", "bool"):
        raise ApplicationError(
            f"parameter '{name}': kind must be int, float or bool, got {kind!r}", field="params"
        )
    description = str(data.get("description") or "").strip()
    if len(description) > PARAM_DESCRIPTION_MAX:
        raise ApplicationError(
            f"parameter '{name}': the description is longer than {PARAM_DESCRIPTION_MAX} "
            "characters",
            field="params",
        )
    raw_default = data.get("default")
    try:
        if kind == "bool":
            return Param(
                name, "bool", _bool(raw_default if raw_default is not None else False, name=name),
                description=description,
            )  # fmt: skip
        default = _number(raw_default, kind=kind, what="the default", name=name)
        if default is None:
            raise ApplicationError(f"parameter '{name}': a default is required", field="params")
        return Param(
            name,
            kind,  # type: ignore[arg-type]  # kind checked by Param itself (StrategyError)
            default,
            _number(data.get("low"), kind=kind, what="low", name=name),
            _number(data.get("high"), kind=kind, what="high", name=name),
            _number(data.get("step"), kind=kind, what="step", name=name),
            description,
        )
    except StrategyError as exc:
        raise ApplicationError(f"parameter '{name}': {exc.message}", field="params") from None


def spec_to_dict(spec: StrategySpec) -> dict[str, Any]:
    """The JSON snapshot of a spec (what ``Backtest.spec`` stores)."""
    return {
        "name": spec.name,
        "description": spec.description,
        **spec.rules,
        "params": [param_to_dict(p) for p in spec.params],
    }


def spec_from_dict(data: Mapping[str, Any]) -> StrategySpec:
    """Rebuild a spec from ``spec_to_dict`` output (or a Strategy's fields)."""
    params = tuple(param_from_dict(p) for p in data.get("params") or ())
    try:
        return StrategySpec(
            name=str(data.get("name") or "strategy"),
            params=params,
            description=str(data.get("description") or ""),
            **{rule: str(data.get(rule) or "") for rule in RULES},
        )
    except StrategyError as exc:
        raise ApplicationError(exc.message, field=exc.field or "params") from None


def strategy_spec(strategy: Strategy) -> StrategySpec:
    """The engine spec of a saved strategy."""
    return spec_from_dict(
        {
            "name": strategy.name,
            "description": strategy.description,
            "params": strategy.params,
            **{rule: getattr(strategy, rule) for rule in RULES},
        }
    )


def rule_error(exc: StrategyError, *, field: str) -> ApplicationError:
    """An engine error about one rule as an ApplicationError on that rule's field, the column
    (1-based, as editors count) in the message and the 0-based offset in ``extra``."""
    where = "" if exc.col is None else f" (column {exc.col + 1})"
    return ApplicationError(
        f"{exc.message}{where}",
        field=exc.field if exc.field in RULES else field,
        extra={"col": exc.col},
    )


def user_columns(user: User) -> tuple[str, ...]:
    """Extra candle columns (funding rate, on-chain...) in any series the user can use."""
    names: set[str] = set()
    visible = MarketSeries.objects.filter(Q(owner__isnull=True) | Q(owner=user))
    for extra in visible.exclude(extra_columns=[]).values_list("extra_columns", flat=True):
        names.update(str(c) for c in extra or ())
    return tuple(sorted(names))


def rule_check(
    *, expression: str, field: str, params: Iterable[Param | str], columns: Iterable[str] = ()
) -> None:
    """Raise ApplicationError (field = the rule, message with the column) if ``expression`` is
    not a valid rule over ``params`` and ``columns``; an empty rule is valid."""
    if field not in RULES:
        raise ApplicationError(f"unknown rule {field!r}", field="field")
    try:
        validate_expression(expression, params=list(params), columns=tuple(columns), field=field)
    except StrategyError as exc:
        raise rule_error(exc, field=field) from None


# --- validation -----------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    text = (name or "").strip()
    if not text:
        raise ApplicationError("Give the strategy a name.", field="name")
    if len(text) > NAME_MAX:
        raise ApplicationError(f"The name is longer than {NAME_MAX} characters.", field="name")
    return text


def _clean_description(description: str) -> str:
    text = (description or "").strip()
    if len(text) > DESCRIPTION_MAX:
        raise ApplicationError(
            f"The description is longer than {DESCRIPTION_MAX} characters.", field="description"
        )
    return text


def _clean_params(params: Sequence[Mapping[str, Any] | Param]) -> tuple[Param, ...]:
    if len(params) > PARAMS_MAX:
        raise ApplicationError(f"At most {PARAMS_MAX} parameters.", field="params")
    out = tuple(p if isinstance(p, Param) else param_from_dict(p) for p in params)
    seen: set[str] = set()
    for p in out:
        if p.name in seen:
            raise ApplicationError(f"parameter '{p.name}' is declared twice", field="params")
        seen.add(p.name)
    return out


def _validated(
    *,
    name: str,
    description: str,
    rules: Mapping[str, str],
    params: Sequence[Mapping[str, Any] | Param],
    param_values: Mapping[str, Any] | None,
    columns: Iterable[str],
) -> tuple[StrategySpec, dict[str, ParamValue]]:
    """The checked spec and its resolved values; ApplicationError on the first problem."""
    clean_name = _clean_name(name)
    clean_description = _clean_description(description)
    declared = _clean_params(params)
    cols = tuple(columns)
    texts = {rule: (rules.get(rule) or "").strip() for rule in RULES}
    for rule, text in texts.items():
        rule_check(expression=text, field=rule, params=declared, columns=cols)
    if not texts["entry_long"] and not texts["entry_short"]:
        raise ApplicationError(
            "Write at least one entry rule (long or short): without one the strategy never trades.",
            field="entry_long",
        )
    try:
        spec = StrategySpec(
            name=clean_name, params=declared, description=clean_description, **texts
        )
        validate_strategy(spec, columns=cols)
    except StrategyError as exc:
        if exc.field in RULES:
            raise rule_error(exc, field=exc.field) from None
        raise ApplicationError(exc.message, field="params") from None
    try:
        values = spec.resolve_params(param_values or {})
    except StrategyError as exc:
        raise ApplicationError(exc.message, field="param_values") from None
    return spec, values


def _kept_values(old: Mapping[str, Any], params: Sequence[Param]) -> dict[str, ParamValue]:
    """Old values that still fit the (possibly edited) declarations; others fall back."""
    kept: dict[str, ParamValue] = {}
    for p in params:
        if p.name in old:
            try:
                kept[p.name] = p.coerce(old[p.name])
            except StrategyError:
                continue
    return kept


def _owned(user: User, strategy: Strategy) -> None:
    if strategy.owner_id != user.pk:
        raise NotFound("Strategy not found.")


def _apply(strategy: Strategy, spec: StrategySpec, values: Mapping[str, ParamValue]) -> None:
    strategy.name = spec.name
    strategy.description = spec.description
    for rule, text in spec.rules.items():
        setattr(strategy, rule, text)
    strategy.params = [param_to_dict(p) for p in spec.params]
    strategy.param_values = dict(values)


# --- services -------------------------------------------------------------------------------


@transaction.atomic
def strategy_create(
    *,
    user: User,
    name: str,
    description: str = "",
    entry_long: str = "",
    exit_long: str = "",
    entry_short: str = "",
    exit_short: str = "",
    params: Sequence[Mapping[str, Any] | Param] = (),
    param_values: Mapping[str, Any] | None = None,
    preset: str = "",
) -> Strategy:
    """Save a new strategy of ``user`` after checking every rule against ``params``.

    ``param_values`` are the values it runs with (defaults fill the rest). Raises
    PlanRequired without Pro, ApplicationError (field = the bad input) otherwise; nothing is
    saved on error.
    """
    require_pro(user)
    if preset and preset not in PRESETS:
        raise ApplicationError(f"unknown preset {preset!r}", field="preset")
    spec, values = _validated(
        name=name,
        description=description,
        rules={
            "entry_long": entry_long,
            "exit_long": exit_long,
            "entry_short": entry_short,
            "exit_short": exit_short,
        },
        params=params,
        param_values=param_values,
        columns=user_columns(user),
    )
    strategy = Strategy(owner=user, preset=preset)
    _apply(strategy, spec, values)
    strategy.save()
    return strategy


@transaction.atomic
def strategy_update(
    *,
    user: User,
    strategy: Strategy,
    name: str = _UNSET,
    description: str = _UNSET,
    entry_long: str = _UNSET,
    exit_long: str = _UNSET,
    entry_short: str = _UNSET,
    exit_short: str = _UNSET,
    params: Sequence[Mapping[str, Any] | Param] = _UNSET,
    param_values: Mapping[str, Any] | None = _UNSET,
) -> Strategy:
    """Change the given fields of ``user``'s strategy (others keep their value), re-checking
    the whole strategy. Without ``param_values`` the old values are kept where they still fit
    the declarations. Earlier backtests keep their own snapshot. NotFound for someone else's
    strategy; ApplicationError on bad input, nothing changed.
    """
    require_pro(user)
    _owned(user, strategy)
    locked = Strategy.objects.select_for_update().get(pk=strategy.pk)
    given = {
        "entry_long": entry_long,
        "exit_long": exit_long,
        "entry_short": entry_short,
        "exit_short": exit_short,
    }
    rules = {
        rule: getattr(locked, rule) if value is _UNSET else value for rule, value in given.items()
    }
    declared = _clean_params(locked.params if params is _UNSET else params)
    values = (
        _kept_values(locked.param_values or {}, declared)
        if param_values is _UNSET
        else param_values
    )
    spec, resolved = _validated(
        name=locked.name if name is _UNSET else name,
        description=locked.description if description is _UNSET else description,
        rules=rules,
        params=declared,
        param_values=values,
        columns=user_columns(user),
    )
    _apply(locked, spec, resolved)
    locked.save()
    strategy.refresh_from_db()
    return locked


@transaction.atomic
def strategy_delete(*, user: User, strategy: Strategy) -> None:
    """Delete ``user``'s strategy. Its backtests stay (each holds a snapshot of the rules)."""
    _owned(user, strategy)
    Strategy.objects.filter(pk=strategy.pk, owner=user).delete()


def _free_name(user: User, base: str) -> str:
    taken = set(
        Strategy.objects.filter(owner=user, name__startswith=base).values_list("name", flat=True)
    )
    if base not in taken:
        return base
    n = 2
    while f"{base} ({n})" in taken:
        n += 1
    return f"{base} ({n})"


@transaction.atomic
def strategy_from_preset(*, user: User, preset: str, name: str | None = None) -> Strategy:
    """A new strategy of ``user`` holding a copy of preset ``preset`` at its defaults.

    The name defaults to the preset's label ("SMA crossover", then "SMA crossover (2)"...).
    """
    require_pro(user)
    spec = PRESETS.get(preset)
    if spec is None:
        raise ApplicationError(f"unknown preset {preset!r}", field="preset")
    return strategy_create(
        user=user,
        name=name if name is not None else _free_name(user, preset_label(preset)),
        description=spec.description,
        params=spec.params,
        param_values=spec.defaults(),
        preset=preset,
        **spec.rules,
    )


def _matches_preset(strategy: Strategy, spec: StrategySpec) -> bool:
    return (
        all(getattr(strategy, rule) == text for rule, text in spec.rules.items())
        and strategy.params == [param_to_dict(p) for p in spec.params]
        and strategy.param_values == spec.defaults()
    )


@transaction.atomic
def strategy_ensure_preset(*, user: User, preset: str) -> Strategy:
    """``user``'s unmodified copy of preset ``preset``, created if there is none (the "run a
    preset" quick path uses it, so repeated quick runs do not pile up identical copies)."""
    require_pro(user)
    spec = PRESETS.get(preset)
    if spec is None:
        raise ApplicationError(f"unknown preset {preset!r}", field="preset")
    for strategy in Strategy.objects.filter(owner=user, preset=preset).order_by("created_at"):
        if _matches_preset(strategy, spec):
            return strategy
    return strategy_from_preset(user=user, preset=preset)

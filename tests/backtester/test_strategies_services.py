"""Strategy services: every rule checked with the engine's language, nothing saved on error."""

from __future__ import annotations

import pytest

from backtester.engine.language import PRESETS
from backtester.models import Strategy
from backtester.services.strategies import (
    rule_check,
    strategy_create,
    strategy_delete,
    strategy_ensure_preset,
    strategy_from_preset,
    strategy_spec,
    strategy_update,
)
from config.exceptions import ApplicationError, NotFound, PlanRequired
from tests.backtester.backtest_factories import make_user

pytestmark = pytest.mark.django_db

FAST = {"name": "fast", "kind": "int", "default": 10, "low": 2, "high": 50, "step": 1}
SLOW = {"name": "slow", "kind": "int", "default": 30, "low": 10, "high": 200, "step": 10}


def _create(user, **kw):
    args = {
        "name": "Cross",
        "entry_long": "cross_above(sma(close, fast), sma(close, slow))",
        "exit_long": "cross_below(sma(close, fast), sma(close, slow))",
        "params": [FAST, SLOW],
    }
    args.update(kw)
    return strategy_create(user=user, **args)


def test_strategy_from_preset_copies_rules_params_and_defaults():
    user = make_user()
    strategy = strategy_from_preset(user=user, preset="bollinger_reversion")
    preset = PRESETS["bollinger_reversion"]
    assert strategy.owner == user
    assert strategy.name == "Bollinger band reversion"
    assert strategy.preset == "bollinger_reversion"
    assert strategy.entry_long == preset.entry_long
    assert strategy.param_values == {"period": 20, "k": 2.0}
    assert strategy_spec(strategy).rules == preset.rules
    assert strategy_spec(strategy).params == preset.params


def test_a_second_copy_of_a_preset_gets_a_numbered_name():
    user = make_user()
    strategy_from_preset(user=user, preset="sma_cross")
    second = strategy_from_preset(user=user, preset="sma_cross")
    assert second.name == "SMA crossover (2)"


def test_unknown_preset_is_refused_on_the_preset_field():
    with pytest.raises(ApplicationError) as err:
        strategy_from_preset(user=make_user(), preset="moon_shot")
    assert err.value.field == "preset"
    assert Strategy.objects.count() == 0


def test_create_stores_declarations_and_resolved_values():
    user = make_user()
    strategy = _create(user, param_values={"fast": "12"})
    assert strategy.params[0] == {
        "name": "fast",
        "kind": "int",
        "default": 10,
        "low": 2,
        "high": 50,
        "step": 1,
        "description": "",
    }
    assert strategy.param_values == {"fast": 12, "slow": 30}


def test_a_misspelt_column_is_refused_on_its_rule_with_the_column_number():
    user = make_user()
    with pytest.raises(ApplicationError) as err:
        _create(user, exit_long="cross_below(sma(clsoe, fast), sma(close, slow))")
    assert err.value.field == "exit_long"
    assert "clsoe" in err.value.message
    assert "(column 17)" in err.value.message  # 'clsoe' starts at offset 16
    assert err.value.extra == {"col": 16}
    assert Strategy.objects.count() == 0


def test_a_rule_using_an_undeclared_parameter_is_refused():
    with pytest.raises(ApplicationError) as err:
        _create(make_user(), entry_long="rsi(close, period) < 30", params=[FAST, SLOW])
    assert err.value.field == "entry_long"
    assert "period" in err.value.message
    assert Strategy.objects.count() == 0


def test_python_tricks_are_refused_not_evaluated():
    with pytest.raises(ApplicationError) as err:
        _create(make_user(), entry_long="__import__('os').system('true')")
    assert err.value.field == "entry_long"
    assert Strategy.objects.count() == 0


def test_a_strategy_without_any_entry_rule_is_refused():
    with pytest.raises(ApplicationError) as err:
        _create(make_user(), entry_long="", entry_short="")
    assert err.value.field == "entry_long"
    assert "never trades" in err.value.message


def test_parameter_declaration_errors_name_the_parameter():
    user = make_user()
    bad_range = {**FAST, "low": 60}
    with pytest.raises(ApplicationError) as err:
        _create(user, params=[bad_range, SLOW])
    assert err.value.field == "params"
    assert "'fast'" in err.value.message
    with pytest.raises(ApplicationError) as err:
        _create(user, params=[FAST, FAST, SLOW])
    assert "declared twice" in err.value.message
    with pytest.raises(ApplicationError) as err:
        _create(user, params=[{**FAST, "name": "close"}, SLOW])
    assert "close" in err.value.message
    with pytest.raises(ApplicationError) as err:
        _create(user, params=[{**FAST, "default": "ten"}, SLOW])
    assert "number" in err.value.message
    assert Strategy.objects.count() == 0


def test_a_value_outside_the_declared_range_is_refused_on_param_values():
    with pytest.raises(ApplicationError) as err:
        _create(make_user(), param_values={"fast": 500})
    assert err.value.field == "param_values"
    assert "between 2 and 50" in err.value.message
    assert Strategy.objects.count() == 0


def test_update_rechecks_rules_and_changes_nothing_on_error():
    user = make_user()
    strategy = _create(user)
    with pytest.raises(ApplicationError) as err:
        strategy_update(user=user, strategy=strategy, entry_long="sma(close, fast) >")
    assert err.value.field == "entry_long"
    strategy.refresh_from_db()
    assert strategy.entry_long.startswith("cross_above")


def test_update_keeps_values_that_still_fit_and_resets_the_others():
    user = make_user()
    strategy = _create(user, param_values={"fast": 40, "slow": 50})
    narrower = [{**FAST, "high": 20}, SLOW]
    updated = strategy_update(user=user, strategy=strategy, params=narrower)
    assert updated.param_values == {"fast": 10, "slow": 50}


def test_another_users_strategy_cannot_be_changed_or_deleted():
    owner, other = make_user(), make_user()
    strategy = _create(owner)
    with pytest.raises(NotFound):
        strategy_update(user=other, strategy=strategy, name="mine now")
    with pytest.raises(NotFound):
        strategy_delete(user=other, strategy=strategy)
    assert Strategy.objects.get(pk=strategy.pk).name == "Cross"


def test_delete_removes_the_strategy():
    user = make_user()
    strategy = _create(user)
    strategy_delete(user=user, strategy=strategy)
    assert not Strategy.objects.filter(pk=strategy.pk).exists()


def test_free_users_cannot_create_strategies():
    with pytest.raises(PlanRequired):
        _create(make_user(pro=False))
    assert Strategy.objects.count() == 0


def test_ensure_preset_reuses_an_untouched_copy_but_not_an_edited_one():
    user = make_user()
    first = strategy_ensure_preset(user=user, preset="sma_cross")
    assert strategy_ensure_preset(user=user, preset="sma_cross") == first
    strategy_update(user=user, strategy=first, param_values={"fast": 15})
    again = strategy_ensure_preset(user=user, preset="sma_cross")
    assert again != first
    assert again.param_values == {"fast": 10, "slow": 30}


def test_rule_check_reports_the_offending_column():
    rule_check(expression="rsi(close, 14) < lower", field="entry_long", params=["lower"])
    with pytest.raises(ApplicationError) as err:
        rule_check(expression="rsi(close, 14) < lowr", field="entry_long", params=["lower"])
    assert err.value.extra["col"] == 17
    assert "lower" in err.value.message  # the suggestion

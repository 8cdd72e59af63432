"""The research forms: the backtest form's strategy and settings with one market and a range
per parameter (optimization), plus the windows (walk-forward)."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from backtester.engine.language import Param
from backtester.engine.optimize import OBJECTIVES
from backtester.forms.backtests import BacktestForm, whole_field
from backtester.models import MarketSeries, OptimizationJob, Strategy, WalkForwardJob
from backtester.services.backtests import fmt_day
from config.exceptions import ApplicationError


class ResearchForm(BacktestForm):
    """The backtest form's strategy and settings fields (same labels, units and checks), one
    market instead of several, and per strategy a range for each parameter in place of a
    single value. ``ranges()`` gives the service's ``ranges`` argument."""

    # One market here, several in BacktestForm: a declared form field replaces the parent's.
    series = forms.ChoiceField(  # type: ignore[assignment]
        label="Market", error_messages={"required": "Choose a market."}
    )
    method = forms.ChoiceField(
        label="Search",
        choices=OptimizationJob.Method.choices,
        initial=OptimizationJob.Method.GRID,
    )
    samples = whole_field(
        "Samples (random search)",
        initial=200,
        low=1,
        high=None,
        help_text="How many distinct combinations to draw from the ranges.",
    )
    seed = whole_field(
        "Seed (random search)",
        initial=None,
        high=None,
        help_text="The same seed draws the same sample. Empty: a new one, saved with the run.",
    )
    objective = forms.ChoiceField(
        label="Rank by",
        choices=[(o.key, o.label) for o in OBJECTIVES.values()],
        initial="sharpe",
    )
    constraint = forms.CharField(
        required=False,
        max_length=500,
        label="Constraint (optional)",
        help_text="Only combinations where this holds, e.g. fast < slow.",
    )
    min_trades = forms.IntegerField(
        min_value=0,
        initial=5,
        label="Minimum trades",
        help_text="Runs with fewer closed trades are listed but never ranked.",
    )

    def __init__(
        self,
        *args: Any,
        strategies: list[Strategy],
        series: list[MarketSeries],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, strategies=strategies, series=series, **kwargs)
        # One market: its timeframe comes with it.
        del self.fields["timeframe"]
        cast(forms.ChoiceField, self.fields["series"]).choices = [
            (str(s.pk), f"{s.symbol} {s.timeframe} · {s.exchange} ({fmt_day(s.first_ts)} → "
             f"{fmt_day(s.last_ts)})")
            for s in series
        ]  # fmt: skip
        self.range_groups: list[dict[str, Any]] = []
        for group in self.param_groups:
            for name in group["names"]:
                del self.fields[name]
            key = group["key"]
            rows = [self._add_range_fields(key, p) for p in self.spec_for(key).params]
            self.range_groups.append({"key": key, "label": group["label"], "rows": rows})

    @staticmethod
    def range_field(strategy_key: str, param: str, part: str) -> str:
        return "r__" + strategy_key.replace(":", "_") + "__" + param + "__" + part

    def _add_range_fields(self, key: str, p: Param) -> dict[str, Any]:
        row: dict[str, Any] = {"param": p, "names": {}}
        if p.kind == "bool":
            name = self.range_field(key, p.name, "values")
            self.fields[name] = forms.ChoiceField(
                label=p.name,
                choices=[("both", "both"), ("true", "true only"), ("false", "false only")],
                initial="both",
                required=False,
            )
            row["names"]["choice"] = name
            return row
        declared = p.low is not None and p.high is not None
        initial = {
            "low": p.low if declared else p.default,
            "high": p.high if declared else p.default,
            "step": p.step if p.step is not None else (1 if p.kind == "int" else ""),
        }
        for part in ("low", "high", "step"):
            name = self.range_field(key, p.name, part)
            self.fields[name] = forms.CharField(
                required=False, label=f"{p.name} {part}", initial=initial[part], max_length=30
            )
            row["names"][part] = name
        if declared:
            row["help"] = f"{p.kind}, declared {p.low} to {p.high}"
        else:
            row["help"] = f"{p.kind}, no declared range: fixed at {p.default} unless widened"
        return row

    def ranges(self) -> dict[str, Any]:
        key = self.cleaned_data["strategy"]
        group = next((g for g in self.range_groups if g["key"] == key), None)
        out: dict[str, Any] = {}
        for row in group["rows"] if group else ():
            p: Param = row["param"]
            names = row["names"]
            if p.kind == "bool":
                choice = self.cleaned_data.get(names["choice"]) or "both"
                out[p.name] = {"both": [False, True], "true": [True], "false": [False]}[choice]
                continue
            spec = {
                part: str(self.cleaned_data.get(name) or "").strip() for part, name in names.items()
            }
            out[p.name] = {part: value for part, value in spec.items() if value}
        return out

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("method") == "random" and not data.get("samples"):
            self.add_error("samples", "Say how many combinations to draw.")
        return data

    def show_error(self, exc: ApplicationError) -> None:
        """Put a service error on the field it names (a range error on that parameter's row)."""
        param = exc.extra.get("param") if isinstance(exc.extra, dict) else None
        if exc.field == "ranges" and param:
            key = self.cleaned_data.get("strategy", "")
            for part in ("low", "values"):
                name = self.range_field(key, str(param), part)
                if name in self.fields:
                    self.add_error(name, exc.message)
                    return
        if exc.field in ("start", "end", "series") or (exc.field and exc.field in self.fields):
            self.add_error(exc.field, exc.message)
        else:
            self.add_error(None, exc.message)


class OptimizationForm(ResearchForm):
    name = forms.CharField(required=False, max_length=160, label="Name (optional)")


class WalkForwardForm(ResearchForm):
    mode = forms.ChoiceField(
        label="Windows",
        choices=WalkForwardJob.Mode.choices,
        initial=WalkForwardJob.Mode.ROLLING,
    )
    unit = forms.ChoiceField(
        label="Lengths in", choices=WalkForwardJob.Unit.choices, initial=WalkForwardJob.Unit.DAYS
    )
    train = forms.IntegerField(min_value=1, label="Training length", initial=90)
    test = forms.IntegerField(min_value=1, label="Test length", initial=30)
    step = forms.IntegerField(
        required=False,
        min_value=1,
        label="Step",
        help_text="How far each window moves on; empty: the test length.",
    )

    field_order = ["train", "test", "step"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["samples"].initial = 100
        self.fields["min_trades"].initial = 3

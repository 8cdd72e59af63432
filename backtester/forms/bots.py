"""The bot pages' forms: deploying a strategy bot, a grid's settings (backtest and deploy),
and a background grid search."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from backtester.models import GridBot, MarketSeries
from backtester.selectors.marketdata import series_visible_to
from backtester.services.grid_search import OBJECTIVES
from config.fields import DecimalDigits
from exchanges.models import ExchangeAccount

MONEY: DecimalDigits = {"max_digits": 28, "decimal_places": 8}


class DeployForm(forms.Form):
    account = forms.ModelChoiceField(
        queryset=ExchangeAccount.objects.none(),
        label="Account",
        help_text="Paper or real; the account must be able to trade.",
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # (type: ignore below) self.fields holds Field; this one is a ModelChoiceField
        self.fields["account"].queryset = ExchangeAccount.objects.filter(owner=user)  # type: ignore[attr-defined]


class GridFields(forms.Form):
    lower = forms.DecimalField(label="Lower price", min_value=Decimal("0.00000001"), **MONEY)
    upper = forms.DecimalField(label="Upper price", min_value=Decimal("0.00000001"), **MONEY)
    levels = forms.IntegerField(
        label="Levels", min_value=2, max_value=10_000, help_text="Price lines; cells = levels - 1"
    )
    spacing = forms.ChoiceField(choices=GridBot.Spacing.choices, initial="arithmetic")
    investment = forms.DecimalField(
        label="Investment", min_value=Decimal("0.00000001"), help_text="In the quote currency",
        **MONEY,
    )  # fmt: skip
    stop_loss = forms.DecimalField(
        label="Stop-loss", required=False, help_text="Optional, below the range", **MONEY
    )
    take_profit = forms.DecimalField(
        label="Take-profit", required=False, help_text="Optional, above the range", **MONEY
    )
    trailing = forms.BooleanField(
        label="Trail the range up",
        required=False,
        help_text="When the price passes one spacing above the top, the lowest level leaves and "
        "a level joins on top",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        lower, upper = data.get("lower"), data.get("upper")
        if lower is not None and upper is not None and upper <= lower:
            self.add_error("upper", f"The upper price ({upper}) must be above the lower ({lower})")
        return data

    def grid_values(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {name: d.get(name) for name in GRID_NAMES}


GRID_NAMES = (
    "lower", "upper", "levels", "spacing", "investment", "stop_loss", "take_profit", "trailing",
)  # fmt: skip


class GridBacktestForm(GridFields):
    series = forms.ModelChoiceField(queryset=MarketSeries.objects.none(), label="Market")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (type: ignore below) self.fields holds Field; this one is a ModelChoiceField
        self.fields["series"].queryset = (  # type: ignore[attr-defined]
            series_visible_to(user).filter(count__gt=0).order_by("symbol", "timeframe")
        )
        self.order_fields(["series", *GRID_NAMES])


class GridDeployForm(GridFields):
    account = forms.ModelChoiceField(
        queryset=ExchangeAccount.objects.none(),
        label="Account",
        help_text="Paper or real; the account must be able to trade.",
    )
    symbol = forms.CharField(max_length=40, help_text="A spot market like SOL/USDT")
    name = forms.CharField(max_length=160, required=False)

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (type: ignore below) self.fields holds Field; this one is a ModelChoiceField
        self.fields["account"].queryset = ExchangeAccount.objects.filter(owner=user)  # type: ignore[attr-defined]
        self.order_fields(["account", "symbol", "name", *GRID_NAMES])


TRAILING_CHOICES = (("off", "Off"), ("on", "On"), ("both", "Both (off and on)"))


class GridSearchForm(forms.Form):
    series = forms.ModelChoiceField(queryset=MarketSeries.objects.none(), label="Market")
    investment = forms.DecimalField(
        label="Investment", min_value=Decimal("0.00000001"), help_text="In the quote currency",
        **MONEY,
    )  # fmt: skip
    lowers = forms.CharField(label="Lower prices", help_text="Values to try, e.g. 85, 90, 95")
    uppers = forms.CharField(label="Upper prices", help_text="e.g. 105, 110, 120")
    levels = forms.CharField(label="Levels", help_text="e.g. 5, 10, 20, 40")
    spacings = forms.MultipleChoiceField(
        label="Spacing", choices=GridBot.Spacing.choices, initial=["arithmetic"],
        widget=forms.CheckboxSelectMultiple,
    )  # fmt: skip
    trailing = forms.ChoiceField(label="Trailing up", choices=TRAILING_CHOICES, initial="off")
    objective = forms.ChoiceField(
        label="Rank by",
        choices=[(o, o.replace("_", " ")) for o in OBJECTIVES],
        initial="total_return",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["series"].queryset = (  # type: ignore[attr-defined]
            series_visible_to(user).filter(count__gt=0).order_by("symbol", "timeframe")
        )

    def values(self) -> dict[str, Any]:
        d = self.cleaned_data
        split = lambda name: [x for x in d[name].replace(",", " ").split() if x]  # noqa: E731
        flags = {"off": [False], "on": [True], "both": [False, True]}[d["trailing"]]
        return {
            "series": d["series"], "investment": d["investment"], "lowers": split("lowers"),
            "uppers": split("uppers"), "levels": split("levels"), "spacings": d["spacings"],
            "trailing": flags, "objective": d["objective"],
        }  # fmt: skip

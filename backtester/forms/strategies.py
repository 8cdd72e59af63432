"""The strategy editor's forms: the rules and description, and one parameter row."""

from __future__ import annotations

from typing import Any

from django import forms

from backtester.engine.language import RULES

RULE_LABELS = {
    "entry_long": "Enter long when",
    "exit_long": "Exit long when",
    "entry_short": "Enter short when",
    "exit_short": "Exit short when",
}


RULE_HELP = {
    "entry_long": "Buy on the bar where this is true (filled at the next open by default).",
    "exit_long": "Sell the long position when this is true.",
    "entry_short": "Leave empty for a long-only strategy.",
    "exit_short": "Close the short position when this is true.",
}


class StrategyForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=4000
    )
    entry_long = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    exit_long = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    entry_short = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    exit_short = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for rule in RULES:
            field = self.fields[rule]
            field.label = RULE_LABELS[rule]
            field.help_text = RULE_HELP[rule]
            field.widget.attrs.update(
                {
                    "class": "mono",
                    "spellcheck": "false",
                    "autocomplete": "off",
                    "data-rule": rule,
                }
            )


class ParamForm(forms.Form):
    """One row of the parameter table. Values stay text here; the service converts them by
    kind and reports problems naming the parameter."""

    name = forms.CharField(required=False, max_length=40)
    kind = forms.ChoiceField(
        choices=[("int", "int"), ("float", "float"), ("bool", "bool")], initial="int"
    )
    default = forms.CharField(required=False, max_length=30)
    low = forms.CharField(required=False, max_length=30)
    high = forms.CharField(required=False, max_length=30)
    step = forms.CharField(required=False, max_length=30)
    value = forms.CharField(required=False, max_length=30)
    description = forms.CharField(required=False, max_length=200)

    def is_blank(self) -> bool:
        data = self.cleaned_data
        return not any(
            str(data.get(k) or "").strip() for k in ("name", "default", "low", "high", "step")
        )

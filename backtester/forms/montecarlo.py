"""The Monte Carlo form: the resampling method, iterations, seed and ruin threshold."""

from __future__ import annotations

from django import forms

from backtester.engine.montecarlo import MAX_ITERATIONS
from backtester.forms.backtests import number_field, whole_field
from backtester.models import MonteCarloRun
from backtester.services.montecarlo import (
    DEFAULT_ITERATIONS,
    MIN_ITERATIONS,
)


class MonteCarloForm(forms.Form):
    """What a trader types: percent for the ruin threshold, bars for the block length."""

    method = forms.ChoiceField(
        label="Method", choices=MonteCarloRun.Method.choices, initial="shuffle"
    )
    iterations = forms.IntegerField(
        label="Iterations",
        initial=DEFAULT_ITERATIONS,
        min_value=MIN_ITERATIONS,
        max_value=MAX_ITERATIONS,
        help_text=f"{MIN_ITERATIONS:,} to {MAX_ITERATIONS:,} simulated histories.",
    )
    block_length = forms.IntegerField(
        label="Block length (bars)",
        required=False,
        min_value=1,
        help_text="Block bootstrap only. Empty: the cube root of the number of bars.",
    )
    ruin_threshold = number_field(
        "Ruin at a drawdown of (%)",
        initial=50,
        low=0.01,
        high=100,
        help_text="A path that falls this far below a peak counts as ruined.",
    )
    seed = whole_field(
        "Seed (optional)",
        initial=None,
        high=2**63 - 1,
        help_text="The same seed gives the same histories. Empty: a random one (shown after).",
    )

"""Prove a compiled strategy does not peek at future bars.

For many cut points t the strategy is compiled again on the candles up to t only; every signal
at a bar <= t must equal the one computed with the full data. A rule that looked ahead would
change its past answers once the future is cut off.

A rule that reads one bar ahead can only be caught by a cut exactly at a bar where it peeks (a
later cut hands it the bar it reads), so a handful of cuts misses a rule that peeks on a few
bars: eight evenly spaced cuts passed a rule peeking on 1 % of bars. The default therefore cuts
after every bar past the warm-up when there are at most ``DEFAULT_POINTS`` of them, and
otherwise after a seeded random sample of that many bars (random, so a rule peeking on a
regular pattern of bars cannot fall between evenly spaced cuts). For a rule that peeks on 1 % of
bars and changes its answer on half of those, 2,000 sampled cuts miss it with a probability of
about e^-10.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from backtester.engine.candles import Candles
from backtester.engine.errors import StrategyError
from backtester.engine.language.compiler import compile_strategy, strategy_warmup
from backtester.engine.language.spec import RULES, StrategySpec
from backtester.engine.signals import Signals

CompileFn = Callable[[StrategySpec, Candles, Mapping[str, object]], Signals]
DEFAULT_POINTS = 2_000
_SAMPLE_SEED = 20_240_917


@dataclass(frozen=True, slots=True)
class LookaheadViolation:
    """``rule`` answered differently at ``bar`` once the data was cut after bar ``cut``.

    ``bar`` is the first such bar and ``count`` how many bars <= ``cut`` differ.
    """

    rule: str
    bar: int
    cut: int
    count: int


@dataclass(frozen=True, slots=True)
class LookaheadReport:
    """The cut points tried and every rule/cut pair whose past signals changed."""

    points: tuple[int, ...]
    violations: tuple[LookaheadViolation, ...]

    @property
    def ok(self) -> bool:
        """True when no signal depended on a bar after it."""
        return not self.violations


def default_points(n: int, warmup: int, count: int = DEFAULT_POINTS) -> tuple[int, ...]:
    """Cut points from just past the warm-up to the second-last bar: all of them when there are
    at most ``count``, else ``count`` of them drawn at random with a fixed seed (the first and
    the last always included), so the report is the same on every run."""
    last = n - 2  # cutting after the last bar would compare the full data with itself
    if last < 0:
        return ()
    first = min(warmup + 1, last)
    span = last - first + 1
    if span <= count:
        return tuple(range(first, last + 1))
    rng = np.random.default_rng(_SAMPLE_SEED)
    inner = rng.choice(np.arange(first + 1, last), size=max(count - 2, 0), replace=False)
    return tuple(sorted({first, last, *(int(t) for t in inner)}))


def check_lookahead(
    spec: StrategySpec,
    candles: Candles,
    params: Mapping[str, object],
    *,
    points: Iterable[int] | None = None,
    compile_fn: CompileFn | None = None,
) -> LookaheadReport:
    """Compare each signal at bars <= t on ``candles[:t+1]`` with the full-data signals.

    ``points`` are the cut bars t (default: every bar past the warm-up, or a seeded sample of
    ``DEFAULT_POINTS`` of them on longer data; see the module docstring). ``compile_fn`` replaces
    ``compile_strategy`` (it exists so tests can show the check catches a cheating evaluator).
    """
    build: CompileFn = compile_fn if compile_fn is not None else compile_strategy
    n = len(candles)
    if points is None:
        warmup = strategy_warmup(spec, params, columns=candles.extra)
        cuts = default_points(n, warmup)
    else:
        cuts = tuple(sorted({int(t) for t in points}))
        for t in cuts:
            if not 0 <= t < n:
                raise StrategyError(f"cut point {t} is outside the {n} bars of data")
    full = build(spec, candles, params)
    violations: list[LookaheadViolation] = []
    for t in cuts:
        part = build(spec, candles.slice(0, t + 1), params)
        for rule in RULES:
            before = getattr(part, rule)
            after = getattr(full, rule)[: t + 1]
            differ = np.flatnonzero(before != after)
            if differ.size:
                violations.append(LookaheadViolation(rule, int(differ[0]), t, int(differ.size)))
    return LookaheadReport(cuts, tuple(violations))

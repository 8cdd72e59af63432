"""The engine's run with the worker's callbacks (stages, growing equity) gives what the one-call
run gives, and the equity it streams while simulating is exactly the final curve."""

from __future__ import annotations

import numpy as np
import pytest

from backtester.engine.errors import EngineError
from backtester.engine.language import PRESETS
from backtester.engine.run import run, run_backtest, run_portfolio, segment_count
from backtester.engine.simulate import SimConfig
from tests.backtester.backtest_factories import candles

CONFIGS = [
    SimConfig(),
    SimConfig(
        fill="close",
        stop_loss=0.01,
        take_profit=0.03,
        trailing_stop=0.015,
        daily_loss_limit=0.02,
        max_drawdown_halt=0.25,
        slippage_bps=3,
    ),
    SimConfig(sizing="vol_target", size_value=0.4, taker_fee=0.0005),
    SimConfig(entry_order="limit", entry_offset=0.002, entry_valid_bars=3),
]


def _same_metrics(a: dict[str, float], b: dict[str, float]) -> None:
    assert list(a) == list(b)
    for key in a:
        if np.isnan(b[key]):
            assert np.isnan(a[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("preset", ["sma_cross", "ema_cross", "donchian_breakout"])
def test_staged_run_equals_run_backtest_and_streams_the_exact_curve(config, preset):
    data = candles(20_000, seed=3, timeframe="1m", symbol="BTC/USDT")
    spec = PRESETS[preset]
    expected = run_backtest(data, spec, {}, config)
    pieces: list[tuple[np.ndarray, np.ndarray, float]] = []
    got = run(
        spec,
        [data],
        spec.resolve_params({}),
        config,
        on_segment=lambda ts, eq, frac: pieces.append((ts.copy(), eq.copy(), frac)),
        segments=7,
    )
    assert len(pieces) == 7
    assert [p[2] for p in pieces] == sorted(p[2] for p in pieces)
    assert pieces[-1][2] == 1.0
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), expected.sim.equity)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces]), data.timestamp)
    np.testing.assert_array_equal(got.sim.trades, expected.sim.trades)
    _same_metrics(got.metrics, expected.metrics)


def test_staged_portfolio_equals_run_portfolio():
    a = candles(8000, seed=1, timeframe="1h", symbol="BTC/USDT")
    b = candles(8000, seed=2, timeframe="1h", symbol="ETH/USDT")
    spec = PRESETS["rsi_reversion"]
    expected = run_portfolio([a, b], spec, {"period": 10}, SimConfig(stop_loss=0.05))
    streamed: list[np.ndarray] = []
    got = run(
        spec,
        [a, b],
        spec.resolve_params({"period": 10}),
        SimConfig(stop_loss=0.05),
        on_segment=lambda ts, eq, frac: streamed.append(eq.copy()),
        segments=3,
    )
    np.testing.assert_array_equal(np.concatenate(streamed), expected.sim.equity)
    np.testing.assert_array_equal(got.sim.trades, expected.sim.trades)
    _same_metrics(got.metrics, expected.metrics)


def test_a_stage_callback_can_stop_the_run():
    data = candles(3000, seed=4)

    class Stop(Exception):
        pass

    stages: list[str] = []

    def on_stage(stage: str) -> None:
        stages.append(stage)
        if stage == "simulating":
            raise Stop

    with pytest.raises(Stop):
        run(PRESETS["sma_cross"], [data], {"fast": 10, "slow": 30}, SimConfig(),
                   on_stage=on_stage)  # fmt: skip
    assert stages == ["signals", "simulating"]


def test_symbols_on_different_bars_are_refused_by_name():
    a = candles(500, seed=1, symbol="BTC/USDT")
    b = candles(500, seed=2, symbol="ETH/USDT", start_ms=1_704_067_200_000 + 3_600_000)
    with pytest.raises(EngineError, match="ETH/USDT and BTC/USDT do not have the same candles"):
        run(PRESETS["sma_cross"], [a, b], {"fast": 10, "slow": 30}, SimConfig())


def test_segment_count_grows_with_the_data_and_is_capped():
    assert segment_count(10) == 1
    assert segment_count(49_999) == 1
    assert segment_count(150_000) == 3
    assert segment_count(525_600) == 5

"""Models of the backtester app, one module per topic."""

from __future__ import annotations

from backtester.models.backtests import Backtest, BacktestResult, BacktestTrade
from backtester.models.marketdata import CandleChunk, FetchJob, MarketSeries
from backtester.models.strategies import Strategy

__all__ = [
    "Backtest",
    "BacktestResult",
    "BacktestTrade",
    "CandleChunk",
    "FetchJob",
    "MarketSeries",
    "Strategy",
]

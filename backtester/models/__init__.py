"""Models of the backtester app, one module per topic."""

from __future__ import annotations

from backtester.models.backtests import Backtest, BacktestResult, BacktestTrade
from backtester.models.grid import GridBot, GridLevel, GridSearch
from backtester.models.live import BotOrder, LiveBot
from backtester.models.marketdata import CandleChunk, FetchJob, MarketSeries, UploadJob
from backtester.models.montecarlo import MonteCarloRun, StressRun
from backtester.models.research import (
    OptimizationChunk,
    OptimizationJob,
    OptimizationRow,
    WalkForwardJob,
)
from backtester.models.scanner import Alert, ScanRun, Watchlist
from backtester.models.strategies import Strategy

__all__ = [
    "Alert",
    "Backtest",
    "BacktestResult",
    "BacktestTrade",
    "BotOrder",
    "CandleChunk",
    "FetchJob",
    "GridBot",
    "GridLevel",
    "GridSearch",
    "LiveBot",
    "MarketSeries",
    "MonteCarloRun",
    "OptimizationChunk",
    "OptimizationJob",
    "OptimizationRow",
    "ScanRun",
    "Strategy",
    "StressRun",
    "UploadJob",
    "WalkForwardJob",
    "Watchlist",
]

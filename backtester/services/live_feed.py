"""The live candle feed: the candles a bot decides on come from its exchange and are stored in
the market-data store as they close, so a bot, its backtest and its drift chart read the very
same rows.

A bot's series downloaded from an exchange (a shared ``ccxt`` series) is refreshed before the
bot steps: ``candles_fetch`` asks the exchange for what the store lacks from its last stored
candle on (refetched, since it may have been stored while still forming), through the candle
client's error policy (429 Retry-After, 5xx backoff). Uploaded and demo series have no
exchange to follow: their bots advance as candles are added to them.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from backtester.models import LiveBot, MarketSeries

logger = logging.getLogger(__name__)


def fed_series(series: MarketSeries) -> bool:
    """True when the series follows an exchange (shared, downloaded with ccxt)."""
    return series.owner_id is None and series.source == MarketSeries.Source.CCXT


def bots_by_series() -> dict[int, list[int]]:
    """Running bots grouped by their series id."""
    out: dict[int, list[int]] = defaultdict(list)
    rows = LiveBot.objects.filter(status=LiveBot.Status.RUNNING).values_list("series_id", "pk")
    for series_id, bot_id in rows:
        out[series_id].append(bot_id)
    return dict(out)


def series_feed(*, series_id: int) -> int:
    """Store the candles the exchange has closed (or opened) since the series' last one.
    Returns how many were added; an exchange error is logged and the bot steps on what is
    stored (the next tick tries again)."""
    from backtester.services.marketdata import candles_fetch

    series = MarketSeries.objects.filter(pk=series_id).first()
    if series is None or not fed_series(series) or series.last_ts is None:
        return 0
    try:
        result = candles_fetch(
            exchange=series.exchange,
            symbol=series.symbol,
            timeframe=series.timeframe,
            since_ts=int(series.last_ts),
        )
    except Exception as exc:
        logger.warning("live feed of %s %s failed: %s", series.symbol, series.timeframe, exc)
        return 0
    return result.candles_added

"""The backtest engine: pure numpy (and numba) over candle arrays. No Django, no I/O beyond readers."""

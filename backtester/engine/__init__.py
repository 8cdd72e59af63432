"""The backtest engine: pure numpy and numba over candle arrays.

No Django, no I/O beyond the file readers. The contract between modules is in README.md.
"""

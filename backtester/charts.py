"""The chart helpers moved to ``backtester.results.charts``; this name stays for the modules
owned elsewhere that still import it (risk/charts.py and the bot pages). Import the new one."""

from backtester.results.charts import (  # noqa: F401
    _layout,
    equity_figure,
    int_list,
    ms_iso,
    num_list,
)

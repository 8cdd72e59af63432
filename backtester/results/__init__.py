"""A backtest's results: stored (``store``), drawn (``charts``, ``research_charts``, thinned by
``downsample``), shown as the metric table (``metric_table``) and served (``views``: the detail
page, trades, exports, compare)."""

"""The backtester's forms, one module per topic (views parse with them, services decide)."""

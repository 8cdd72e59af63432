"""Research tools: optimization, walk-forward, Monte Carlo, stress windows, scanner."""

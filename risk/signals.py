"""Signals of the risk app.

``trading_halted``: a user's trading (``account_id`` None) or one account's went to HALTED
(kill switch or a breaker). Sent after the commit with ``sender=TradingState`` and kwargs
``user_id``, ``account_id``, ``code`` and ``reason``. Copy trading and live bots connect to it
and stop what they run for that user/account.
"""

from __future__ import annotations

from django.dispatch import Signal

trading_halted = Signal()

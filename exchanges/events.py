"""Fill events: one way every source (ccxt websocket, REST poll, paper exchange) reports an
execution on a linked account, so copy trading and bots cannot tell the sources apart.

Receivers connect to ``fill_observed`` (``sender`` is ExchangeAccount, kwargs ``account_id``
and ``fill``: an ``exchanges.trading.Fill``). Sources call ``publish_fill``; inside a
transaction the signal fires after the commit, so a receiver never sees a fill whose rows
were rolled back. Receivers must be idempotent: the same fill may be reported by the stream
and again by the poll (``Fill.fill_id`` is the key).
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

from exchanges.trading import Fill

fill_observed = Signal()


def publish_fill(*, account_id: int, fill: Fill) -> None:
    """Announce one execution on ``account_id`` (after the current transaction commits)."""
    from exchanges.models import ExchangeAccount

    def send() -> None:
        fill_observed.send(sender=ExchangeAccount, account_id=account_id, fill=fill)

    transaction.on_commit(send)


# Deleting an account stops what runs on it. Apps with live work on accounts (copy trading,
# bots) connect receivers:
#   account_usage(sender=ExchangeAccount, account=...) -> list[str]: what runs on it, in words,
#       for the delete confirmation ("Copying leader Alice into this account");
#   account_removing(sender=ExchangeAccount, account=...): stop it; called inside the deleting
#       transaction, before the row goes.
account_usage = Signal()
account_removing = Signal()

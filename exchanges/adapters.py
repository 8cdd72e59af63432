"""One way to get a ``TradingAdapter`` for a linked account, whatever its kind.

API-key and OAuth accounts get the ccxt adapter (``exchanges.clients``) signed with the
account's decrypted credentials; paper accounts get ``exchanges.paper.PaperExchange(account)``.
Credentials are decrypted here and handed straight to the adapter: they are never returned to
a caller, logged or put into an error message.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.db import connection

from config.exceptions import ApplicationError
from exchanges import vault
from exchanges.clients import Credentials, FillStream, make_trading_adapter
from exchanges.events import publish_fill
from exchanges.models import AccountSecret, ExchangeAccount
from exchanges.trading import Fill, TradingAdapter


def credentials_for(account: ExchangeAccount) -> Credentials:
    """The account's decrypted credentials; ``SecretUnreadable`` naming the account when a
    secret was encrypted under a key that is no longer configured."""
    names = AccountSecret.Name
    sealed = {s.name: s.sealed for s in account.secrets.all()}
    owner_label = f"exchange account {account.pk} ({account.label})"

    def read(name: str) -> str:
        return vault.unseal(sealed[name], owner_label=owner_label) if name in sealed else ""

    if account.kind == ExchangeAccount.Kind.OAUTH:
        return Credentials(api_key="", secret="", token=read(names.OAUTH_ACCESS))
    return Credentials(
        api_key=read(names.API_KEY), secret=read(names.API_SECRET), password=read(names.PASSPHRASE)
    )


def adapter_for(account: ExchangeAccount, **options: Any) -> TradingAdapter:
    """The trading adapter of ``account``. ``options`` go to the ccxt adapter (timeouts, a
    ``sleep`` for tests); paper accounts take none."""
    if account.kind == ExchangeAccount.Kind.PAPER:
        try:
            paper = import_module("exchanges.paper")
        except ModuleNotFoundError as exc:
            if exc.name != "exchanges.paper":
                raise
            raise ApplicationError(
                "Paper trading is not available in this installation yet."
            ) from exc
        return paper.PaperExchange(account)
    adapter: TradingAdapter = make_trading_adapter(
        account.exchange,
        credentials=credentials_for(account),
        sandbox=account.sandbox,
        **options,
    )
    return adapter


def fill_stream_for(
    account: ExchangeAccount,
    *,
    symbols: list[str] | None = None,
    since_ms: int = 0,
    poll_seconds: float = 5.0,
    use_websocket: bool = True,
    on_order: Any = None,
) -> FillStream:
    """The live stream of ``account``'s fills, each published once with
    ``exchanges.events.publish_fill`` (ccxt websocket where the exchange has one, REST polling
    from ``since_ms`` otherwise). Run it with ``await stream.run(stop_event)``."""
    if account.kind == ExchangeAccount.Kind.PAPER:
        raise ApplicationError("Paper accounts report their fills as they fill; no stream needed.")
    account_id = account.pk

    def publish(fill: Fill) -> None:
        # Runs on a worker thread of the stream: close the connection that thread opened, so
        # a long-running stream does not hold one per thread.
        try:
            publish_fill(account_id=account_id, fill=fill)
        finally:
            if not connection.in_atomic_block:
                connection.close()

    return FillStream(
        exchange_id=account.exchange,
        credentials=credentials_for(account),
        on_fill=publish,
        on_order=on_order,
        symbols=list(symbols or []),
        since_ms=since_ms,
        sandbox=account.sandbox,
        poll_seconds=poll_seconds,
        use_websocket=use_websocket,
    )

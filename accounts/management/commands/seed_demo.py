"""Seed the embedded default: plans, the demo Pro user (password printed) and demo data."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from accounts.services import demo_user_ensure
from backtester.services.marketdata import demo_seed
from backtester.services.samples import demo_backtest_ensure


class Command(BaseCommand):
    help = (
        "Create the Free/Pro plans, the demo Pro user (password printed), the demo candles, and "
        "one strategy with one completed backtest for the demo user."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", default=settings.DEMO_USER_EMAIL)
        parser.add_argument("--password", help="Set this password (default: a new random one).")
        parser.add_argument(
            "--reset-password", action="store_true", help="Give an existing demo user a new one."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"]
        if options["reset_password"] and not password:
            import secrets

            password = secrets.token_urlsafe(12)
        user, new_password = demo_user_ensure(email=options["email"], password=password)
        if new_password:
            self.stdout.write(
                self.style.SUCCESS(f"Demo Pro user: {user.email}  password: {new_password}")
            )
        else:
            self.stdout.write(
                f"Demo Pro user {user.email} already exists (password unchanged; "
                "run `python manage.py seed_demo --reset-password` for a new one)."
            )
        self._seed_paper_account(user)
        seeded = demo_seed()
        self.stdout.write(
            f"Demo market data: {seeded.series} synthetic series, {seeded.candles:,} candles "
            f"({seeded.written} written now)."
        )
        self._seed_copy_trading(user)
        backtest = demo_backtest_ensure(user=user)
        self.stdout.write(
            f"Demo strategy: {backtest.strategy}; demo backtest #{backtest.pk} "
            f"({backtest.status}): {backtest.name}."
        )
        if getattr(settings, "LIVE_BOTS_DEMO", False):
            self._seed_bot(user, backtest.strategy)

    def _seed_bot(self, user: Any, strategy: Any) -> None:
        """A running paper bot of the demo user on the demo ETH/USDT candles (issue 14)."""
        from backtester.services.live_bots import demo_bot_ensure

        bot, created = demo_bot_ensure(user=user, strategy=strategy)
        state = "created, its first week replayed" if created else "already there"
        self.stdout.write(
            f"Demo bot “{bot.name}” ({bot.get_status_display().lower()}, "
            f"{bot.orders.count()} orders) on “{bot.account.label if bot.account else '-'}”: "
            f"{state}."
        )

    def _seed_paper_account(self, user: Any) -> None:
        """The demo user's paper exchange account (issue 11), so live features work offline."""
        from exchanges.services_paper import paper_demo_ensure

        account, created = paper_demo_ensure(owner=user)
        state = "created" if created else "already linked"
        self.stdout.write(
            f"Demo paper account “{account.label}” ({account.starting_balance.normalize():f} "
            f"{account.paper_quote}): {state}."
        )

    def _seed_copy_trading(self, user: Any) -> None:
        """A demo leader trading a paper account, followed by the demo user's paper account
        (issue 13); the demo leader's beat replays the SMA crossover preset."""
        from copytrading.services.demo import demo_copy_ensure

        demo = demo_copy_ensure(demo_user=user)
        # The follower's account may have been deleted since (the subscription is stopped then).
        account = demo.subscription.account
        into = f"into “{account.label}”" if account is not None else "(its account was deleted)"
        self.stdout.write(f"Demo copy trading: {user.email} follows “{demo.leader.name}” {into}.")

"""Re-encrypt every stored exchange secret under the newest key of EXCHANGE_ENCRYPTION_KEYS.

Put the new key first in EXCHANGE_ENCRYPTION_KEYS (keep the old ones after it), run this, then
drop the old keys. A secret that no configured key can read stops the command with an error
naming its account; accounts done before it stay re-encrypted.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from exchanges import vault
from exchanges.services import secrets_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt every exchange secret under the newest EXCHANGE_ENCRYPTION_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = secrets_reencrypt()
        except vault.SecretUnreadable as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Key {vault.current_fingerprint()}: {report.reencrypted} secret(s) re-encrypted, "
            f"{report.already_current} already current, {report.secrets_total} in total, "
            f"across {report.accounts} account(s)."
        )

"""A cheap password hasher for the suite's own users.

It is Django's PBKDF2 (the same ``pbkdf2_sha256`` algorithm name and hash format) with few
iterations. A hash names its iteration count, so the servers the tests start in other
processes (daphne, with the deployment's settings) verify these passwords with their stock
hasher, as they would verify an old hash after an upgrade.
"""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FewRoundsPBKDF2(PBKDF2PasswordHasher):
    iterations = 1_000

"""PostgreSQL advisory locks for "one worker at a time" on a row (a bot's step, say).

Other databases (the embedded SQLite default) run a single worker: the locks are always
granted there. Callers pick a key space of their own (e.g. ``0x51B0_0000 + bot id``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection


@contextlib.contextmanager
def session_lock(key: int) -> Iterator[bool]:
    """Try to take ``key`` for the session (held across transactions) until the block ends;
    yields False, taking nothing, when another session holds it."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        got = bool(cur.fetchone()[0])
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [key])


def transaction_lock(key: int) -> bool:
    """Try to take ``key`` until the current transaction ends (False: another session holds
    it, as a session lock or a transaction lock)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cur.fetchone()[0])

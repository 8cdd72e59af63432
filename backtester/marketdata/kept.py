"""Uploads kept on the server after a refused try, so the user can fix another field and send
"the same file" again: a browser never refills a file input, and choosing the file again after
every mistake is what made the upload form feel broken.

One directory per user under MEDIA_ROOT/kept-uploads/; a kept file is addressed by a random
token that only its owner's requests look up, and lives KEEP_SECONDS at most.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from django.conf import settings

KEEP_SECONDS = 3600
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _dir(user_id: int) -> Path:
    return Path(settings.MEDIA_ROOT) / "kept-uploads" / str(int(user_id))


def _prune(folder: Path) -> None:
    cutoff = time.time() - KEEP_SECONDS
    for path in folder.glob("*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue


def upload_keep(*, user_id: int, data: bytes, filename: str) -> str:
    """Store ``data`` (named ``filename``) for ``user_id``; returns the token that finds it."""
    folder = _dir(user_id)
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder)
    token = secrets.token_hex(16)
    (folder / f"{token}.name").write_text(filename[:200], encoding="utf-8")
    (folder / f"{token}.data").write_bytes(data)
    return token


def upload_kept(*, user_id: int, token: str) -> tuple[bytes, str] | None:
    """The bytes and file name kept under ``token`` for ``user_id``; None when the token is
    malformed, someone else's, expired or used up."""
    if not _TOKEN.match(token or ""):
        return None
    folder = _dir(user_id)
    data_path, name_path = folder / f"{token}.data", folder / f"{token}.name"
    try:
        if data_path.stat().st_mtime < time.time() - KEEP_SECONDS:
            return None
        return data_path.read_bytes(), name_path.read_text(encoding="utf-8")
    except OSError:
        return None


def upload_forget(*, user_id: int, token: str) -> None:
    """Delete a kept upload (after it was stored, or when replaced by a new file)."""
    if not _TOKEN.match(token or ""):
        return
    for suffix in (".data", ".name"):
        (_dir(user_id) / f"{token}{suffix}").unlink(missing_ok=True)

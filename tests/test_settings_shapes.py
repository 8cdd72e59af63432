"""The two settings shapes: production refuses to start without its secrets and passes
`check --deploy`; the embedded shape runs on SQLite with no server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROD_ONLY = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "DJANGO_SECURE",
    "STATIC_MANIFEST",
    "WHITENOISE_USE_FINDERS",
    "VAR_DIR",
    "CELERY_BROKER_URL",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRICE_ID",
)
# Billing values production requires besides DJANGO_SECRET_KEY (test values, never real keys).
STRIPE_REQUIRED = {
    "STRIPE_SECRET_KEY": "sk_test_not_a_real_key",
    "STRIPE_WEBHOOK_SECRET": "whsec_test_not_a_real_secret",
    "STRIPE_PRICE_ID": "price_test_pro",
}


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROD_ONLY}
    env.update(overrides)
    return env


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_shape_without_secret_key_stops_and_names_the_variable():
    env = _env(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/quantfold",
        REDIS_URL="redis://127.0.0.1:6379/1",
        **STRIPE_REQUIRED,
    )
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
    assert "required in production" in result.stderr


def test_production_shape_passes_check_deploy_with_debug_off_and_secrets_set(tmp_path):
    env = _env(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/quantfold",
        REDIS_URL="redis://127.0.0.1:6379/1",
        DJANGO_SECRET_KEY="x" * 20 + "a-long-random-looking-production-secret-value-123",
        DJANGO_ALLOWED_HOSTS="quantfold.example.com",
        STATIC_ROOT=str(tmp_path / "static"),
        **STRIPE_REQUIRED,
    )
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_embedded_shape_uses_sqlite_and_no_server(tmp_path):
    env = _env(VAR_DIR=str(tmp_path))
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE']);"
        "print(s.CACHES['default']['BACKEND']);"
        "print(s.CELERY_BROKER_URL);"
        "print(s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    result = _manage("shell", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    engine, cache, broker, layer = result.stdout.split()[-4:]
    assert engine == "django.db.backends.sqlite3"
    assert cache.endswith("LocMemCache")
    assert broker == "filesystem://"
    assert layer == "config.channel_layers.SQLiteChannelLayer"


def test_deployments_hash_passwords_with_django_default_pbkdf2():
    """The test suite swaps in few-round PBKDF2 for its own users (tests/conftest.py); the
    settings every deployment loads must not: they keep Django's default, PBKDF2 first."""
    from django.conf import global_settings

    import config.settings as deployed

    assert not hasattr(deployed, "PASSWORD_HASHERS")
    assert global_settings.PASSWORD_HASHERS[0].endswith(".PBKDF2PasswordHasher")

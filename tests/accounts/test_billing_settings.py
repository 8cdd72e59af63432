"""Production refuses to start without its Stripe settings, naming the one that is missing."""

from __future__ import annotations

import pytest

from tests.test_settings_shapes import STRIPE_REQUIRED, _env, _manage

PRODUCTION = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/quantfold",
    "REDIS_URL": "redis://127.0.0.1:6379/1",
    "DJANGO_SECRET_KEY": "x" * 20 + "a-long-random-looking-production-secret-value-123",
}


@pytest.mark.parametrize("missing", sorted(STRIPE_REQUIRED))
def test_production_without_a_stripe_setting_stops_and_names_it(missing):
    present = {k: v for k, v in STRIPE_REQUIRED.items() if k != missing}
    result = _manage("check", env=_env(**PRODUCTION, **present))
    assert result.returncode != 0
    assert f"The environment variable {missing} is required in production" in result.stderr
    # The message names the variable, never a value of another one.
    for value in present.values():
        assert value not in result.stderr


def test_the_embedded_shape_starts_without_stripe_and_billing_is_off(tmp_path):
    code = (
        "from accounts.billing import billing_configured;"
        "from django.conf import settings as s;"
        "print(repr(s.STRIPE_SECRET_KEY), billing_configured())"
    )
    result = _manage("shell", "-c", code, env=_env(VAR_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["''", "False"]

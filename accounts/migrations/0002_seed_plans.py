from django.db import migrations

# Values frozen at the time of writing; later changes go through the admin or a new migration.
PLANS = [
    {"code": "free", "name": "Free", "price_cents": 0},
    {
        "code": "pro",
        "name": "Pro",
        "price_cents": 3999,
        "max_concurrent_backtests": 4,
        "max_candles_per_backtest": 5_000_000,
        "max_optimization_combinations": 10_000,
        "max_exchange_accounts": 10,
        "max_followers": 100,
    },
]


def seed(apps, schema_editor):
    Plan = apps.get_model("accounts", "Plan")
    for row in PLANS:
        values = dict(row)
        Plan.objects.get_or_create(code=values.pop("code"), defaults=values)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]

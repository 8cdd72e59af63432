"""Store candle chunk bytes uncompressed by PostgreSQL (they are compressed already).

With the default EXTENDED storage PostgreSQL tries pglz on every chunk it writes and fails to
shrink it; EXTERNAL keeps the bytes out of line without that attempt. SQLite has no such
setting, so the operation does nothing there.
"""

from django.db import migrations


def _set_storage(storage):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = apps.get_model("backtester", "CandleChunk")._meta.db_table
        schema_editor.execute(f'ALTER TABLE "{table}" ALTER COLUMN "data" SET STORAGE {storage}')

    return apply


class Migration(migrations.Migration):
    dependencies = [("backtester", "0001_initial")]

    operations = [
        migrations.RunPython(_set_storage("EXTERNAL"), _set_storage("EXTENDED"), elidable=False),
    ]

"""Shapes of the API answers that views build as plain dicts (backtest_json, fetch_job_payload,
results, equity), written out for the OpenAPI schema.

They only describe; the views stay the source of the data. tests/accounts/test_api_schema.py
checks real answers against the published schema, so a field added to a view and not here (or
the reverse) fails a test.
"""

from __future__ import annotations

from rest_framework import serializers

from backtester.models import Backtest, FetchJob


class BacktestLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    result = serializers.URLField()
    trades = serializers.URLField()
    equity = serializers.URLField()
    cancel = serializers.URLField()
    page = serializers.URLField(help_text="The backtest's page in the web app.")
    websocket = serializers.CharField(help_text="Path of the live progress websocket.")


class BacktestSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Backtest.Status.choices)
    progress = serializers.FloatField(help_text="0..1")
    stage = serializers.CharField(help_text="What the worker is doing now, or the status.")
    error = serializers.CharField(allow_blank=True)
    strategy = serializers.IntegerField(
        allow_null=True, help_text="The strategy's id (null once it is deleted)."
    )
    strategy_name = serializers.CharField(allow_blank=True)
    series = serializers.ListField(child=serializers.IntegerField(), help_text="Series ids.")
    symbols = serializers.ListField(child=serializers.CharField())
    timeframe = serializers.CharField()
    start = serializers.DateTimeField(allow_null=True)
    end = serializers.DateTimeField(allow_null=True)
    param_values = serializers.DictField()
    settings = serializers.DictField(help_text="Engine settings; fees are fractions.")
    cached_from = serializers.IntegerField(
        allow_null=True, help_text="The identical earlier backtest whose result was reused."
    )
    candle_count = serializers.IntegerField()
    engine_seconds = serializers.FloatField(allow_null=True)
    timings = serializers.DictField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    links = BacktestLinksSerializer()


class ExportLinksSerializer(serializers.Serializer):
    trades_csv = serializers.URLField()
    equity_csv = serializers.URLField()
    json = serializers.URLField()
    html = serializers.URLField()

    def get_fields(self) -> dict[str, serializers.Field]:
        # The keys carry dashes ("trades-csv"), which are not Python names.
        fields = super().get_fields()
        return {name.replace("_", "-"): field for name, field in fields.items()}


class ResultLinksSerializer(BacktestLinksSerializer):
    exports = ExportLinksSerializer()


class BacktestResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    metrics = serializers.DictField(
        help_text="Every engine metric by name (null where undefined, e.g. no trades)."
    )
    trade_count = serializers.IntegerField()
    open_positions = serializers.ListField(child=serializers.DictField())
    engine_seconds = serializers.FloatField(allow_null=True)
    links = ResultLinksSerializer()


class EquitySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    bars = serializers.IntegerField(help_text="Bars in the full curve.")
    points = serializers.IntegerField(help_text="Points returned (downsampled with LTTB).")
    timestamp = serializers.ListField(
        child=serializers.IntegerField(), help_text="Epoch milliseconds."
    )
    equity = serializers.ListField(child=serializers.FloatField())
    benchmark = serializers.ListField(
        child=serializers.FloatField(allow_null=True),
        allow_null=True,
        help_text="Buy and hold, same points; null when there is none.",
    )


class FetchJobSeriesSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    exchange = serializers.CharField()
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    count = serializers.IntegerField()
    first_ts = serializers.IntegerField(allow_null=True)
    last_ts = serializers.IntegerField(allow_null=True)


class FetchJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField(help_text='The run\'s kind ("fetch"), as in ws/runs/<kind>/<id>/.')
    status = serializers.ChoiceField(choices=FetchJob.Status.choices)
    status_display = serializers.CharField()
    progress = serializers.FloatField(help_text="0..1")
    stage = serializers.CharField(help_text="What the worker is doing now, or the status.")
    finished = serializers.BooleanField()
    candles_fetched = serializers.IntegerField()
    requests_made = serializers.IntegerField()
    gaps = serializers.IntegerField(help_text="Holes in the exchange's history (not filled).")
    error = serializers.CharField(allow_blank=True)
    series = FetchJobSeriesSerializer()
    since_ts = serializers.IntegerField()
    until_ts = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

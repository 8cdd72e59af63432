"""Candle store benchmark: a year of 1-minute candles from PostgreSQL into numpy.

Target (issue 4): at least 20 million candles per second, i.e. 525,600 candles in 30 ms or less.

    .venv/bin/python bench/store_bench.py               # 15 loads, PostgreSQL from the env
    .venv/bin/python bench/store_bench.py --repeat 31

It runs against a database of its own (``test_<name>_storebench`` on the server DATABASE_URL
names, default postgres://postgres@127.0.0.1:5432/quantfold, created and migrated here and
dropped at the end unless --keep-db), writes the synthetic BTC/USDT year (525,600 one-minute
candles, prices on a 0.01 tick, volume on 1e-5, as an exchange sends them) into one series, then
loads the whole series ``--repeat`` times through ``load_candles`` (PostgreSQL query in binary
mode, decode, validated Candles) and prints the median, the spread and the rate. It also shows
where the time goes: the query alone and the decode alone.
"""

from __future__ import annotations

import statistics
import time

import benchlib

benchlib.django_env()

TARGET_MS = 30.0


def main() -> int:
    args = benchlib.parse_repeat(__doc__, default=15, help_text="loads to time (median shown)")

    import numpy as np

    from backtester.marketdata import codec, store
    from backtester.models import MarketSeries

    old_name, db_name, _ = benchlib.bench_database("store")
    try:
        candles = benchlib.year_of_minutes()
        n = len(candles)
        series = benchlib.bench_series("1m")
        t0 = time.perf_counter()
        store.write_candles(series=series, candles=candles)
        write_ms = (time.perf_counter() - t0) * 1000
        raw_mb = n * 6 * 8 / 1e6
        stored = store._fetch_chunk_bytes(series.pk, None, None)
        stored_mb = sum(len(data) for _, data in stored) / 1e6

        loaded = store.load_candles(series)  # warm: connection, imports, page cache
        assert len(loaded) == n
        assert np.array_equal(loaded.close, candles.close)
        assert np.array_equal(loaded.timestamp, candles.timestamp)

        total, query, decode = [], [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            store.load_candles(series)
            total.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            rows = store._fetch_chunk_bytes(series.pk, None, None)
            query.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            for _count, data in rows:
                codec.decode_chunk(data)
            decode.append((time.perf_counter() - t) * 1000)

        med = statistics.median(total)
        rate = n / (med / 1000)
        print("Candle store bench (PostgreSQL -> numpy), codec", codec.CODEC_NAME)
        print(f"  database            {db_name} (server {old_name})")
        print(f"  candles             {n:,} (a year of 1-minute BTC/USDT, synthetic)")
        print(f"  chunks              {len(stored)} of <= {store.CHUNK_CANDLES:,} candles")
        print(f"  size                {raw_mb:.1f} MB raw -> {stored_mb:.2f} MB stored")
        print(f"  write (one call)    {write_ms:.0f} ms")
        print(
            f"  load_candles        median {med:.1f} ms  (min {min(total):.1f}, "
            f"max {max(total):.1f}, n={len(total)})"
        )
        print(f"    query only        median {statistics.median(query):.1f} ms")
        print(f"    decode only       median {statistics.median(decode):.1f} ms")
        print(f"  rate                {rate / 1e6:.1f} million candles/s")
        verdict = "PASS" if med <= TARGET_MS else "MISS"
        print(f"  target              <= {TARGET_MS:.0f} ms (>= 20 M candles/s): {verdict}")
        MarketSeries.objects.filter(pk=series.pk).delete()
    finally:
        benchlib.drop_database(old_name, keep=args.keep_db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

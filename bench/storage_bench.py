"""Measures BatchWriter throughput on one engine: ``python -m bench.storage_bench --url URL --rows N``.

Writes N signal rows shaped like the pipeline's (Chinese text, arrays, nullable coordinates) through
a BatchWriter with the given settings and prints sustained rows/s (add + flush until all written).
"""
from __future__ import annotations

import argparse
import asyncio
import time

from streams.settings import Settings
from streams.storage.store import open_store
from streams.storage.writer import BatchWriter


def signal_row(i: int) -> dict[str, object]:
    return {
        "signal_id": f"bench-{i:09d}", "source": "hotline", "source_kind": "12345", "source_id": f"call-{i}",
        "ts_ms": 1_763_600_000_000 + i, "ingest_ms": 1_763_600_000_050 + i, "category_code": "0101",
        "category_name": "占道经营", "confidence": 0.82, "context": ["street_front"], "lat": 31.2 + i % 100 * 1e-4,
        "lon": 121.44, "cell": "8a309a6a1a07fff", "community": "复兴居委", "street": "湖南路街道", "street_code": "hn",
        "district": "徐汇区", "address": f"复兴中路{i % 1000}号", "reporter_id": "", "reporter_kind": "",
        "handled_on_spot": 0,
    }


async def measure(url: str, rows: int, batch_rows: int, chunk: int = 500) -> float:
    store = open_store(url)
    try:
        store.migrate()
        settings = Settings(store_batch_rows=batch_rows, store_flush_seconds=0.2, store_buffer_rows=max(rows, 1))
        writer = BatchWriter(store, settings)
        task = asyncio.create_task(writer.run())
        started = time.perf_counter()
        for start in range(0, rows, chunk):
            await writer.wait_for_room(min(chunk, rows - start))
            writer.add("signals", [signal_row(i) for i in range(start, min(start + chunk, rows))])
            await asyncio.sleep(0)
        await writer.stop()
        await task
        elapsed = time.perf_counter() - started
        written = store.query("SELECT count() AS n FROM signals FINAL WHERE signal_id LIKE 'bench-%'")[0]["n"]
        if written < rows:
            raise RuntimeError(f"only {written} of {rows} rows written")
        return rows / elapsed
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="chdb://PATH or clickhouse://host:port/db")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    args = parser.parse_args()
    rate = asyncio.run(measure(args.url, args.rows, args.batch_rows))
    print(f"{args.url}: {args.rows} rows, {rate:,.0f} rows/s through BatchWriter (batch {args.batch_rows})")


if __name__ == "__main__":
    main()

"""Listing benchmark: GET /v1/runs at 100,000 stored runs, beside /healthz in the same loop.

Starts real NATS, the MongoDB-wire server and the api, stores the runs straight
into the database (`bench/seeding.py`: indexes first, then insert_many of
documents made by the api's own `run_document`, spread over 30 days and all
statuses, with their latest epochs), then requests, in interleaved rounds:
/healthz (the baseline: the same HTTP stack, no database), the first page, a
status filter, a name search and a page deep behind a cursor. Prints p50/p99
of each, its ratio to /healthz, and the machine's load while it measured.

    .venv/bin/python bench/listing.py [--runs 100000] [--rounds 200]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.seeding import SEEDED_CACHE, ensure_seeded
from trainyard.localstack import LocalStack


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def deep_cursor(http: httpx.Client, pages: int) -> str:
    cursor = None
    for _ in range(pages):
        body = http.get("/v1/runs", params={"limit": 50, **({"cursor": cursor} if cursor else {})}).json()
        cursor = body["next_cursor"]
    assert cursor, "fewer runs than the deep page needs"
    return str(cursor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--deep-pages", type=int, default=200, help="the deep page is this many pages in")
    parser.add_argument("--data-dir", type=Path, help="keep the stack (and its seeded runs) here, to reuse them "
                                                      "next time; default: a temporary directory, removed")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    stack = LocalStack(data_dir, subject_prefix="bench", mongo_db="bench", mongo_cache_size=SEEDED_CACHE)
    try:
        stack.start_servers()
        assert stack.mongo_url
        print(ensure_seeded(stack.mongo_url, "bench", args.runs, str(data_dir), progress=print), flush=True)
        stack.start_service("api")
        auth = {"Authorization": f"Bearer {stack.admin_key}"}
        with httpx.Client(base_url=stack.api_url, headers=auth, timeout=60) as http:
            cursor = deep_cursor(http, args.deep_pages)
            requests: dict[str, Callable[[], httpx.Response]] = {
                "/healthz (baseline)": lambda: http.get("/healthz"),
                "first page": lambda: http.get("/v1/runs"),
                "status=failed": lambda: http.get("/v1/runs", params={"status": "failed"}),
                "search 'cosine'": lambda: http.get("/v1/runs", params={"search": "cosine"}),
                f"page {args.deep_pages + 1} by cursor": lambda: http.get("/v1/runs", params={"cursor": cursor}),
            }
            for request in requests.values():  # warm up connections and caches
                request().raise_for_status()
            samples: dict[str, list[float]] = {name: [] for name in requests}
            load_before = os.getloadavg()[0]
            for _ in range(args.rounds):
                for name, request in requests.items():
                    begun = time.perf_counter()
                    response = request()
                    samples[name].append(time.perf_counter() - begun)
                    response.raise_for_status()
            load_after = os.getloadavg()[0]
    finally:
        stack.stop()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    base = samples["/healthz (baseline)"]
    b50, b99 = percentile(base, 0.5), percentile(base, 0.99)
    print(f"{args.runs:,} runs stored; {args.rounds} interleaved rounds; load average {load_before:.1f} before, "
          f"{load_after:.1f} after, on {os.cpu_count()} cores")
    for name, values in samples.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"{name:<28} p50 {p50 * 1e3:7.1f} ms  p99 {p99 * 1e3:7.1f} ms  mean "
              f"{statistics.mean(values) * 1e3:7.1f} ms  ratio to /healthz p50 {p50 / b50:6.1f}x  "
              f"p99 {p99 / b99:6.1f}x")
    listed = {name: percentile(values, 0.99) for name, values in samples.items() if name != "/healthz (baseline)"}
    worst = max(listed, key=lambda name: listed[name])
    print(f"goal p99 <= 50 ms: {'met' if listed[worst] <= 0.050 else 'missed'} (worst {worst}, "
          f"{listed[worst] * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()

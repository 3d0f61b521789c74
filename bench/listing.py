"""Listing benchmark: GET /v1/runs at 100,000 stored runs, beside /healthz in the same loop.

Starts real NATS, the MongoDB-wire server and the api, inserts the runs straight
into the database (insert_many, documents made by the api's own
`run_document`, spread over 30 days and all statuses), then requests, in
interleaved rounds: /healthz (the baseline: the same HTTP stack, no database),
the first page, a status filter, a name search and a page deep behind a cursor.
Prints p50/p99 of each and its ratio to /healthz.

    .venv/bin/python bench/listing.py [--runs 100000] [--rounds 200]
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient
from pymongo.collection import Collection

from services.api.run_creation import run_document
from services.api.store import ApiStore
from shared.events import utcnow
from shared.specs import RunSpec
from shared.status import RunStatus
from shared.store import PROJECTS, RUNS
from trainyard.localstack import LocalStack

WORDS = ("detector", "shapes", "baseline", "tiny", "sweep", "augment", "long", "cosine", "frozen", "fp16")
# The one statuses are drawn from, most runs having ended as they do in a long-lived project.
STATUS_WEIGHTS = {RunStatus.SUCCESS: 70, RunStatus.FAILED: 10, RunStatus.ABORTED: 4, RunStatus.TERMINATED: 10,
                  RunStatus.PENDING: 4, RunStatus.IN_PROGRESS: 2}
DATASET = {"layout": {"root": "/data/shapes", "train": {"images": "train", "annotations": "train.json"},
                      "val": {"images": "val", "annotations": "val.json"}, "classes": ["a", "b"]}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def insert_runs(mongo_url: str, database: str, count: int) -> None:
    rng = random.Random(15)
    now = utcnow()
    statuses, weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_url) as client:
        runs: Collection[dict[str, Any]] = client[database][RUNS]
        first = now
        batch: list[dict[str, Any]] = []
        for i in range(count):
            name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)} {i}"
            spec = RunSpec.model_validate({"name": name, "dataset_id": "0" * 32, "architecture": "rtmdet-tiny"})
            doc = run_document("default", spec, DATASET, None, "bench")
            created = now - timedelta(days=30) * (1 - i / count)
            status = str(rng.choices(statuses, weights)[0])
            doc.update(created_at=created, updated_at=created, status=status,
                       history=[{"status": status, "at": created, "message": None, "attempt": 1}])
            first = min(first, created)
            batch.append(doc)
            if len(batch) == 1000:
                runs.insert_many(batch, ordered=False)
                batch = []
        if batch:
            runs.insert_many(batch, ordered=False)
        client[database][PROJECTS].update_one({"_id": "default"}, {"$min": {"first_run_at": first}}, upsert=True)


async def build_api_indexes(mongo_url: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        await ApiStore(client[database]).ensure_indexes()
    finally:
        await client.close()


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
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    stack = LocalStack(data_dir, subject_prefix="bench", mongo_db="bench")
    try:
        stack.start_servers()
        assert stack.mongo_url
        started = time.perf_counter()
        insert_runs(stack.mongo_url, "bench", args.runs)
        inserted = time.perf_counter()
        # The api's own indexes, built once over the stored runs (cheaper than maintained per insert;
        # the api's start-up then finds them in place).
        asyncio.run(build_api_indexes(stack.mongo_url, "bench"))
        print(f"inserted {args.runs} runs in {inserted - started:.0f} s, indexed them in "
              f"{time.perf_counter() - inserted:.0f} s")
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
            for _ in range(args.rounds):
                for name, request in requests.items():
                    begun = time.perf_counter()
                    response = request()
                    samples[name].append(time.perf_counter() - begun)
                    response.raise_for_status()
    finally:
        stack.stop()
    base = samples["/healthz (baseline)"]
    b50, b99 = percentile(base, 0.5), percentile(base, 0.99)
    print(f"{args.runs} runs stored; {args.rounds} interleaved rounds")
    for name, values in samples.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"{name:<28} p50 {p50 * 1e3:7.1f} ms  p99 {p99 * 1e3:7.1f} ms  mean "
              f"{statistics.mean(values) * 1e3:7.1f} ms  ratio to /healthz p50 {p50 / b50:6.1f}x  "
              f"p99 {p99 / b99:6.1f}x")


if __name__ == "__main__":
    main()

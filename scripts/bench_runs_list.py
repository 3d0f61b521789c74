"""How fast `GET /v1/runs` answers with 100,000 runs in a project, on the local MongoDB-wire server.

    PYTHONPATH=. .venv/bin/python scripts/bench_runs_list.py [--runs 100000] [--days 30]

Starts its own servers and API under a temporary directory, inserts the runs
straight into MongoDB (as the API would store them, spread over `--days`),
then times first pages, deep pages reached through cursors, a status filter,
the status sort and a search. Prints one line per query: milliseconds (median
of 5) and items.
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient

from services.api.search import search_keys
from services.api.store import ApiStore
from trainyard.localstack import LocalStack

STATUSES = ["success"] * 80 + ["failed"] * 10 + ["terminated"] * 5 + ["pending"] * 3 + ["in_progress"] * 2


def insert_runs(stack: LocalStack, count: int, days: float) -> None:
    rng = random.Random(0)
    now = datetime.now(UTC)
    first = now
    assert stack.mongo_url
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_url)
    runs = client[stack.mongo_db]["runs"]
    batch: list[dict[str, Any]] = []
    for i in range(count):
        created = now - timedelta(seconds=rng.random() * days * 86400)
        first = min(first, created)
        run_id, name = f"{rng.getrandbits(128):032x}", f"run-{i} lr{rng.random():.3f}"
        batch.append({
            "_id": run_id, "project": "default", "name": name, "search_keys": search_keys(name, run_id),
            "status": rng.choice(STATUSES), "attempt": 1, "trainer_id": None, "created_at": created,
            "updated_at": created, "history": [{"status": "created", "at": created, "message": None, "attempt": None}],
            "spec": {"name": f"run-{i}", "dataset_id": "d" * 32, "architecture": "rtmdet-tiny", "epochs": 12},
        })
        if len(batch) == 5000:
            runs.insert_many(batch)
            batch = []
    if batch:
        runs.insert_many(batch)
    # What the API records when it inserts runs itself.
    client[stack.mongo_db]["projects"].update_one({"_id": "default"}, {"$min": {"first_run_at": first}}, upsert=True)
    client.close()


async def build_indexes(stack: LocalStack) -> None:
    assert stack.mongo_url
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        await ApiStore(client[stack.mongo_db]).ensure_indexes()
    finally:
        await client.close()


def timed(api: httpx.Client, label: str, params: dict[str, Any]) -> dict[str, Any]:
    samples, body = [], {}
    for _ in range(5):
        started = time.perf_counter()
        response = api.get("/v1/runs", params=params)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        body = response.json()
    print(f"{label:<44} {statistics.median(samples):7.1f} ms  {len(body['items']):4d} items")
    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp), mongo_db="bench")
        stack.start_servers()
        try:
            started = time.perf_counter()
            insert_runs(stack, args.runs, args.days)
            print(f"inserted {args.runs} runs over {args.days:g} days in {time.perf_counter() - started:.0f} s")
            # The API's own indexes, built once over the inserted runs: the local server
            # maintains a multikey index (search_keys) slowly under bulk inserts.
            started = time.perf_counter()
            asyncio.run(build_indexes(stack))
            print(f"built the API's indexes in {time.perf_counter() - started:.0f} s")
            stack.start_service("api")
            with httpx.Client(base_url=stack.api_url, timeout=120,
                              headers={"Authorization": f"Bearer {stack.admin_key}"}) as api:
                body = timed(api, "newest first, page 1 (limit 50)", {"limit": 50})
                for _ in range(2, 41):
                    body = api.get("/v1/runs", params={"limit": 50, "cursor": body["next_cursor"]}).json()
                timed(api, "newest first, page 41 via cursor", {"limit": 50, "cursor": body["next_cursor"]})
                timed(api, "oldest first, page 1", {"limit": 50, "sort": "created_at"})
                timed(api, "status=failed, page 1", {"limit": 50, "status": "failed"})
                timed(api, "sort=status, page 1", {"limit": 50, "sort": "status"})
                timed(api, "limit 200", {"limit": 200})
                timed(api, "search by id prefix", {"limit": 50, "search": body["items"][0]["id"][:8]})
                timed(api, "search 'run-4242' (rare)", {"limit": 50, "search": "run-4242 "})
                timed(api, "search 'lr0.5' (common)", {"limit": 50, "search": "lr0.5"})
        finally:
            stack.stop()


if __name__ == "__main__":
    main()

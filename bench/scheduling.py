"""Scheduling benchmark: how fast the scheduler fills a freed trainer with a deep queue.

Starts real NATS and the MongoDB-wire server, the api and the scheduler, and
50 simulated trainers (bench.loadgen: they speak the trainer protocol and
train nothing). Queues 1,000 runs through the API, then measures, for every
assignment, the time from the moment it became possible (the run was created,
or its trainer's previous run completed, whichever is later) to the
assignment. A NATS request-reply round trip is measured in the same run as the
baseline; results are printed as percentiles and as ratios to it.

Throughput is compared with what the database allows: its raw rate of
fsync'd single-document updates (awaited one by one, and 16 at a time, with the
same client options) measured in the same run, divided by the writes the
stack made per run (the server's opcounters over the measurement).

    .venv/bin/python bench/scheduling.py [--runs 1000] [--trainers 50]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg
from pymongo import AsyncMongoClient

from shared.events import RunAssigned, RunCompleted
from shared.subjects import Subjects
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

WRITE_SAMPLES = 300


async def raw_write_rates(mongo_url: str, database: str) -> tuple[float, float]:
    """Updates per second, awaited one by one and 16 at a time, on a scratch collection."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    scratch = client[database]["bench_raw_writes"]
    try:
        await scratch.insert_many([{"_id": i, "n": 0} for i in range(WRITE_SAMPLES)])
        started = time.perf_counter()
        for i in range(WRITE_SAMPLES):
            await scratch.update_one({"_id": i}, {"$inc": {"n": 1}})
        one_by_one = WRITE_SAMPLES / (time.perf_counter() - started)
        semaphore = asyncio.Semaphore(16)

        async def write(i: int) -> None:
            async with semaphore:
                await scratch.update_one({"_id": i}, {"$inc": {"n": 1}})

        started = time.perf_counter()
        await asyncio.gather(*(write(i) for i in range(WRITE_SAMPLES)))
        concurrent = WRITE_SAMPLES / (time.perf_counter() - started)
        await scratch.drop()
        return one_by_one, concurrent
    finally:
        await client.close()


async def writes_so_far(mongo_url: str) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        counters = (await client.admin.command("serverStatus"))["opcounters"]
        return int(counters["insert"]) + int(counters["update"]) + int(counters["delete"])
    finally:
        await client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def nats_round_trips(url: str, count: int) -> list[float]:
    connection = await nats.connect(url)

    async def echo(message: Msg) -> None:
        await message.respond(message.data)

    await connection.subscribe("bench.echo", cb=echo)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await connection.request("bench.echo", b"x" * 512, timeout=5)
        samples.append(time.perf_counter() - started)
    await connection.drain()
    return samples


async def measure(stack: LocalStack, runs: int, dataset_id: str) -> tuple[list[float], float]:
    prefix = stack.subject_prefix
    assert stack.nats_url
    connection = await nats.connect(stack.nats_url)
    created: dict[str, datetime] = {}
    freed: dict[str, datetime] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def on_assigned(message: Msg) -> None:
        event = RunAssigned.model_validate_json(message.data)
        possible_since = max(created[event.run_id], freed.get(event.trainer_id, created[event.run_id]))
        latencies.append((event.occurred_at - possible_since).total_seconds())
        if len(latencies) == runs:
            done.set()

    async def on_completed(message: Msg) -> None:
        event = RunCompleted.model_validate_json(message.data)
        freed[event.trainer_id] = event.occurred_at

    subjects = Subjects(prefix)
    await connection.subscribe(subjects.run_assigned("*"), cb=on_assigned)
    # Per-trainer subjects: every trainer's completions.
    await connection.subscribe(subjects.run_completed(), cb=on_completed)
    await connection.flush()
    started = time.perf_counter()
    auth = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=auth) as http:
        semaphore = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with semaphore:
                spec = {"name": f"bench-{i}", "dataset_id": dataset_id, "architecture": "rtmdet-tiny"}
                response = await http.post("/v1/runs", json=spec)
                response.raise_for_status()
                body = response.json()
                created[body["id"]] = datetime.fromisoformat(body["created_at"])

        await asyncio.gather(*(create(i) for i in range(runs)))
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    await connection.drain()
    return latencies, runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--trainers", type=int, default=50)
    parser.add_argument("--run-seconds", type=float, default=0.2)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    stack = LocalStack(data_dir, subject_prefix="bench", mongo_db="bench")
    with stack.running(("scheduler", "api")):
        stack.start_load_generator("bench", "--trainers", str(args.trainers), "--run-seconds",
                                   str(args.run_seconds), "--heartbeat-seconds", "2")
        files = write_synthetic_coco(data_dir / "shapes", train_images=2, val_images=1, size=64)
        dataset = httpx.post(f"{stack.api_url}/v1/datasets", json={"name": "b", "path": str(files.root)},
                             headers={"Authorization": f"Bearer {stack.admin_key}"}).json()
        time.sleep(3)  # every simulated trainer has sent a heartbeat
        assert stack.nats_url and stack.mongo_url
        rtt = asyncio.run(nats_round_trips(stack.nats_url, 1000))
        raw_one_by_one, raw_concurrent = asyncio.run(raw_write_rates(stack.mongo_url, "bench"))
        writes_before = asyncio.run(writes_so_far(stack.mongo_url))
        latencies, throughput = asyncio.run(measure(stack, args.runs, dataset["id"]))
        writes_per_run = (asyncio.run(writes_so_far(stack.mongo_url)) - writes_before) / args.runs
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    r50, r99 = percentile(rtt, 0.5), percentile(rtt, 0.99)
    print(f"{args.runs} runs queued through the API onto {args.trainers} simulated trainers")
    print(f"scheduling latency (slot free or run created -> assigned): p50 {p50 * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms, mean {statistics.mean(latencies) * 1e3:.1f} ms")
    print(f"NATS request-reply round trip (baseline):                p50 {r50 * 1e3:.2f} ms, p99 {r99 * 1e3:.2f} ms")
    print(f"ratio to the baseline: p50 {p50 / r50:.1f}x, p99 {p99 / r99:.1f}x")
    print(f"end-to-end throughput: {throughput:.1f} runs/s (creation through assignment of all runs)")
    print(f"database writes per run (server opcounters, heartbeats and all): {writes_per_run:.1f}")
    for label, raw in (("one by one", raw_one_by_one), ("16 at a time", raw_concurrent)):
        bound = raw / writes_per_run
        print(f"raw fsync'd updates {label} (baseline): {raw:.0f}/s -> bound {bound:.1f} runs/s; "
              f"throughput is {throughput / bound:.2f}x of it")


if __name__ == "__main__":
    main()

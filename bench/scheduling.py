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
same client options, on a scratch collection; and one by one on the stored run
documents, which carry the runs collection's indexes) measured in the same run,
divided by the writes the stack made per run (the server's opcounters over the
measurement). Latency is printed for all runs and, apart, for the runs that
waited in the queue (counted from their trainer's previous run completing):
the first runs of the burst are counted from their creation, and wait behind
the API's own inserts of the rest.

Below capacity (the trainers' demand under what the database allows), e.g.
`--runs 300 --run-seconds 20`, the latency is the placement path's own; at the
default 0.2 s runs the 50 trainers ask for far more runs per second than the
database can store, and the latency is the queue's wait (Little's law: trainers
waiting ÷ runs per second).

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


async def raw_run_update_rate(mongo_url: str, database: str) -> float:
    """Updates per second of the stored run documents themselves, awaited one by one: the runs
    collection carries the api's and the scheduler's indexes, and most of a run's writes go there,
    so the scratch collection above undersells what one of them costs. Run after the measurement
    (the runs exist then); it sets a field nobody reads."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    runs = client[database]["runs"]
    try:
        ids = [doc["_id"] async for doc in runs.find({}, {"_id": 1}).limit(WRITE_SAMPLES)]
        started = time.perf_counter()
        for i, run_id in enumerate(ids):
            await runs.update_one({"_id": run_id}, {"$set": {"bench_touched": i}})
        return len(ids) / (time.perf_counter() - started)
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


async def measure(stack: LocalStack, runs: int, dataset_id: str) -> tuple[list[float], list[float], float]:
    """Latencies (all, and those counted from a freed slot alone) and the throughput."""
    prefix = stack.subject_prefix
    assert stack.nats_url
    connection = await nats.connect(stack.nats_url)
    created: dict[str, datetime] = {}
    freed: dict[str, datetime] = {}
    latencies: list[float] = []
    from_freed: list[float] = []
    done = asyncio.Event()

    async def on_assigned(message: Msg) -> None:
        event = RunAssigned.model_validate_json(message.data)
        possible_since = max(created[event.run_id], freed.get(event.trainer_id, created[event.run_id]))
        latencies.append((event.occurred_at - possible_since).total_seconds())
        if possible_since > created[event.run_id]:
            # The run waited in the queue; its trainer's previous run completing made it possible.
            from_freed.append(latencies[-1])
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
    return latencies, from_freed, runs / elapsed


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
        latencies, from_freed, throughput = asyncio.run(measure(stack, args.runs, dataset["id"]))
        writes_per_run = (asyncio.run(writes_so_far(stack.mongo_url)) - writes_before) / args.runs
        raw_run_docs = asyncio.run(raw_run_update_rate(stack.mongo_url, "bench"))
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    r50, r99 = percentile(rtt, 0.5), percentile(rtt, 0.99)
    print(f"{args.runs} runs queued through the API onto {args.trainers} simulated trainers")
    print(f"scheduling latency (slot free or run created -> assigned): p50 {p50 * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms, mean {statistics.mean(latencies) * 1e3:.1f} ms")
    if from_freed:
        f50, f99 = percentile(from_freed, 0.5), percentile(from_freed, 0.99)
        print(f"  of which from a freed slot ({len(from_freed)} runs that waited in the queue): "
              f"p50 {f50 * 1e3:.1f} ms, p99 {f99 * 1e3:.1f} ms")
    print(f"NATS request-reply round trip (baseline):                p50 {r50 * 1e3:.2f} ms, p99 {r99 * 1e3:.2f} ms")
    print(f"ratio to the baseline: p50 {p50 / r50:.1f}x, p99 {p99 / r99:.1f}x")
    print(f"end-to-end throughput: {throughput:.1f} runs/s (creation through assignment of all runs)")
    print(f"database writes per run (server opcounters, heartbeats and all): {writes_per_run:.1f}")
    for label, raw in (("one by one", raw_one_by_one), ("16 at a time", raw_concurrent),
                       ("of run documents, one by one", raw_run_docs)):
        bound = raw / writes_per_run
        print(f"raw fsync'd updates {label} (baseline): {raw:.0f}/s -> bound {bound:.1f} runs/s; "
              f"throughput is {throughput / bound:.2f}x of it")


if __name__ == "__main__":
    main()

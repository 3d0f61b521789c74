"""Scheduling benchmark: how fast the scheduler fills a freed trainer with a deep queue.

Starts real NATS and the MongoDB-wire server, the api and the scheduler, and
50 simulated trainers (bench.loadgen: they speak the trainer protocol and
train nothing). Queues 1,000 runs through the API, then measures, for every
assignment, the time from the moment it became possible (the run was created,
or its trainer's previous run completed, whichever is later) to the
assignment. A NATS request-reply round trip is measured in the same run as the
baseline; results are printed as percentiles and as ratios to it.

    .venv/bin/python bench/scheduling.py [--runs 1000] [--trainers 50]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import nats
from nats.aio.msg import Msg

from shared.events import RunAssigned, RunCompleted
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco


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

    await connection.subscribe(f"{prefix}.run.assigned.>", cb=on_assigned)
    await connection.subscribe(f"{prefix}.run.completed", cb=on_completed)
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
        assert stack.nats_url
        rtt = asyncio.run(nats_round_trips(stack.nats_url, 1000))
        latencies, throughput = asyncio.run(measure(stack, args.runs, dataset["id"]))
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    r50, r99 = percentile(rtt, 0.5), percentile(rtt, 0.99)
    print(f"{args.runs} runs queued through the API onto {args.trainers} simulated trainers")
    print(f"scheduling latency (slot free or run created -> assigned): p50 {p50 * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms, mean {statistics.mean(latencies) * 1e3:.1f} ms")
    print(f"NATS request-reply round trip (baseline):                p50 {r50 * 1e3:.2f} ms, p99 {r99 * 1e3:.2f} ms")
    print(f"ratio to the baseline: p50 {p50 / r50:.1f}x, p99 {p99 / r99:.1f}x")
    print(f"end-to-end throughput: {throughput:.1f} runs/s (creation through assignment of all runs)")


if __name__ == "__main__":
    main()

"""Artifact store benchmark: storing and fetching a checkpoint through the NATS object store.

Starts a real NATS server (JetStream, file store), stores a checkpoint-sized
file (random bytes) and fetches it back, several times, through
`shared.artifacts.Artifacts` as trainers do. The baseline, measured in the same
run on the same disk, is copying the same file with `shutil.copyfile` (what a
shared volume would cost at best); results are printed as medians and as
ratios to it.

    .venv/bin/python bench/artifacts.py [--megabytes 60] [--repeats 5]
"""

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from faststream.nats import NatsBroker

from shared.artifacts import Artifacts
from shared.subjects import Subjects
from trainyard.localstack import LocalStack


async def measure(stack: LocalStack, source: Path, size: int, work: Path, repeats: int) -> dict[str, list[float]]:
    assert stack.nats_url
    broker = NatsBroker(stack.nats_url)
    await broker.connect()
    try:
        artifacts = await Artifacts.open(broker, Subjects("bench"))
        times: dict[str, list[float]] = {"copy": [], "store": [], "fetch": []}
        for i in range(repeats):
            began = time.perf_counter()
            shutil.copyfile(source, work / f"copy-{i}.pth")
            times["copy"].append(time.perf_counter() - began)
            began = time.perf_counter()
            await artifacts.upload_file(f"runs/bench/checkpoints/attempt_1/epoch_{i}.pth", source)
            times["store"].append(time.perf_counter() - began)
            began = time.perf_counter()
            fetched = await artifacts.download(f"runs/bench/checkpoints/attempt_1/epoch_{i}.pth",
                                               work / f"fetched-{i}.pth")
            times["fetch"].append(time.perf_counter() - began)
            assert fetched.size == size
            await artifacts.delete(f"runs/bench/checkpoints/attempt_1/epoch_{i}.pth")
        return times
    finally:
        await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=60, help="checkpoint size (RTMDet-tiny's is ~60 MB)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "checkpoint.pth"
        source.write_bytes(os.urandom(args.megabytes * 2**20))
        (root / "work").mkdir()
        stack = LocalStack(root / "stack")
        stack.start_servers()
        try:
            times = asyncio.run(measure(stack, source, source.stat().st_size, root / "work", args.repeats))
        finally:
            stack.stop()
    copy = statistics.median(times["copy"])
    print(f"{args.megabytes} MB, median of {args.repeats}:")
    print(f"  baseline: file copy on the same disk   {copy * 1000:8.1f} ms")
    for operation in ("store", "fetch"):
        median = statistics.median(times[operation])
        rate = args.megabytes / median
        print(f"  {operation} through the object store      {median * 1000:8.1f} ms  "
              f"({rate:6.0f} MB/s, {median / copy:5.1f}x the copy)")


if __name__ == "__main__":
    main()

"""Epoch ingest benchmark: what keeping each run's best mAP costs the metrics service per epoch.

Starts the local MongoDB-wire server (SecantusDB, fsync'd commits, as the local
stack runs it) and stores epochs through `MetricsStore.record_epoch`, as the
metrics service's handler does, for runs of `--epochs` epochs each. Rounds
alternate between the store as it is (the epoch, its latest-epoch summary, its
confusion matrix, and the recomputed best) and the same store without the best
(`keep_best_epoch` skipped): the baseline, measured in the same run on the
same server. Prints epochs per second of each and their ratio, median of the
rounds.

    .venv/bin/python bench/epoch_ingest.py [--runs 20] [--epochs 30] [--rounds 3]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pymongo import AsyncMongoClient

from services.metrics.store import MetricsStore
from shared.events import ConfusionMatrix, EpochLogged
from trainyard.localstack import LocalStack


class WithoutBest(MetricsStore):
    """The store as it was before runs carried their best mAP."""

    async def keep_best_epoch(self, run_id: str, offered: dict[str, object] | None = None) -> bool:
        return False


def epoch_of(run_id: str, epoch: int, total: int) -> EpochLogged:
    return EpochLogged(
        run_id=run_id, attempt=1, epoch=epoch, total_epochs=total, losses={"loss_cls": 1.0 / epoch, "loss_bbox": 0.5},
        loss=1.0 / epoch + 0.5, learning_rate=0.01, epoch_time_s=2.0,
        metrics={"bbox_mAP": (epoch * 37 % 100) / 100, "bbox_mAP_50": 0.5, "bbox_mAP_75": 0.2},
        confusion_matrix=ConfusionMatrix(classes=["a", "b", "Background"], matrix=[[3, 0, 1], [0, 2, 1], [1, 0, 0]],
                                         score_threshold=0.3, iou_threshold=0.5),
    )


async def ingest(store: MetricsStore, runs: int, epochs: int) -> float:
    """Epochs per second: each run's epochs in order, the runs one after another (one consumer)."""
    run_ids = [uuid.uuid4().hex for _ in range(runs)]
    began = time.perf_counter()
    for run_id in run_ids:
        for epoch in range(1, epochs + 1):
            await store.record_epoch(epoch_of(run_id, epoch, epochs))
    return runs * epochs / (time.perf_counter() - began)


async def measure(url: str, runs: int, epochs: int, rounds: int) -> dict[str, list[float]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url, tz_aware=True)
    try:
        db = client["bench"]
        stores = {"with best": MetricsStore(db), "without best": WithoutBest(db)}
        await stores["with best"].ensure_indexes()
        rates: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(rounds):
            for name, store in stores.items():
                rates[name].append(await ingest(store, runs, epochs))
        return rates
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        stack.start_servers()
        try:
            assert stack.mongo_url
            rates = asyncio.run(measure(stack.mongo_url, args.runs, args.epochs, args.rounds))
        finally:
            stack.stop()
    with_best, without = statistics.median(rates["with best"]), statistics.median(rates["without best"])
    print(f"{args.rounds} interleaved rounds of {args.runs} runs x {args.epochs} epochs, one consumer")
    print(f"with best:    {with_best:.1f} epochs/s  (rounds: {', '.join(f'{r:.1f}' for r in rates['with best'])})")
    print(f"without best: {without:.1f} epochs/s  (rounds: {', '.join(f'{r:.1f}' for r in rates['without best'])})")
    print(f"with / without = {with_best / without:.2f} of the rate, {without / with_best:.2f}x the time per epoch")


if __name__ == "__main__":
    main()

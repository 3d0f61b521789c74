"""Sweep benchmark: what ASHA saves against a random search of the same trials trained to full length.

Starts the real stack (NATS, the MongoDB-wire server, the four services, two CPU
trainers), then trains two sweeps over the learning rate with the same seed, so
both draw the very same trials: an ASHA sweep (trials stopped at its rungs) and
a random search (every trial to max_epochs). For each it sums the training time
of its trials (from each run's start to its end: one CPU thread each, so this is
the CPU time spent training) until the epoch that gave the sweep's best mAP50
was logged, and until the sweep ended. Printed as ratios, ASHA / random.

    .venv/bin/python bench/sweeps.py [--trials 8] [--max-epochs 4] [--eta 4]
"""

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

TRAINER_ENV = {"TRAINYARD_THREADS": "1", "TRAINYARD_HEARTBEAT_INTERVAL_S": "1"}


def run_sweep(api: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    created = api.post("/v1/sweeps", json=spec)
    created.raise_for_status()
    sweep_id = created.json()["id"]
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        sweep = api.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] != "running":
            return dict(sweep)
        time.sleep(1)
    raise TimeoutError(f"sweep {sweep_id} did not finish within an hour")


def training_seconds(api: httpx.Client, sweep: dict[str, Any]) -> tuple[float, float]:
    """(training time until the best epoch was logged, training time in all), summed over trials."""
    spans, best_at = [], None
    best = sweep["best"]
    for trial in sweep["trials"]:
        run = api.get(f"/v1/runs/{trial['run_id']}").json()
        started, completed = (datetime.fromisoformat(run[k]) for k in ("started_at", "completed_at"))
        spans.append((started, completed))
        if best and trial["run_id"] == best["run_id"]:
            epochs = api.get(f"/v1/runs/{trial['run_id']}/logs", params={"kind": "epoch"}).json()["items"]
            best_at = datetime.fromisoformat(next(e for e in epochs if e["epoch"] == best["epoch"])["logged_at"])
    total = sum((end - start).total_seconds() for start, end in spans)
    until = best_at or max(end for _, end in spans)
    to_best = sum(max(0.0, (min(end, until) - start).total_seconds()) for start, end in spans)
    return to_best, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    # Large enough that RTMDet-tiny learns (mmdet-notes: mAP50 0.74 after 30 epochs of 32 images
    # at 128 px); at 16 images of 64 px and 4 epochs every trial's mAP50 stayed 0, and a time to
    # "the best" of all-zero trials measures nothing.
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--first-rung", type=int, default=2)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=32)
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        stack.start(("metrics", "scheduler", "api"))
        try:
            for name in ("bench-trainer-1", "bench-trainer-2"):
                stack.start_service("trainer", name=name, TRAINYARD_TRAINER_ID=name, **TRAINER_ENV)
            files = write_synthetic_coco(stack.data_dir / "shapes", train_images=args.train_images,
                                         val_images=args.val_images, size=args.size)
            with httpx.Client(base_url=stack.api_url, timeout=60,
                              headers={"Authorization": f"Bearer {stack.admin_key}"}) as api:
                dataset = api.post("/v1/datasets", json={"name": "shapes", "path": str(files.root)})
                dataset.raise_for_status()
                base = {"dataset_id": dataset.json()["id"], "architecture": "rtmdet-tiny", "batch_size": 4,
                        "input_size": args.size}
                space = {"learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 5e-2}}
                common = {"base": base, "space": space, "metric": "bbox_mAP_50", "trials": args.trials,
                          "max_concurrent": 2, "seed": 11}
                asha = run_sweep(api, {**common, "name": "asha", "searcher": {
                    "name": "asha", "reduction_factor": args.eta, "first_rung_epochs": args.first_rung,
                    "max_epochs": args.max_epochs}})
                full = run_sweep(api, {**common, "name": "random", "searcher": {"name": "random"},
                                       "base": {**base, "epochs": args.max_epochs}})
                asha_best, asha_total = training_seconds(api, asha)
                full_best, full_total = training_seconds(api, full)
        finally:
            stack.stop()
    stopped = sum(t["stopped"] is not None for t in asha["trials"])
    print(f"{args.trials} trials, max {args.max_epochs} epochs, eta {args.eta}: ASHA stopped {stopped} early")
    print(f"best mAP50: ASHA {asha['best'] and asha['best']['value']}, random {full['best'] and full['best']['value']}")
    if not (asha["best"] and asha["best"]["value"]) and not (full["best"] and full["best"]["value"]):
        print("every trial's mAP50 is 0: the time to the best is not meaningful at this size")
    print(f"training time to the best mAP50: ASHA {asha_best:.1f} s, random {full_best:.1f} s, "
          f"ratio {asha_best / full_best:.2f}")
    print(f"training time in all:            ASHA {asha_total:.1f} s, random {full_total:.1f} s, "
          f"ratio {asha_total / full_total:.2f}")


if __name__ == "__main__":
    main()

"""Trainer overhead benchmark: a run trained by trainyard against the same config trained by bare MMEngine.

Starts the real stack (NATS, the MongoDB-wire server, the four services, one
CPU trainer at one thread), then, in interleaved pairs, trains one generated
RTMDet-tiny run through trainyard and the very config it served
(`GET /v1/runs/{id}/config`, trainyard's own hooks and metrics taken out, its
COCO metric replaced by MMDetection's CocoMetric, nothing else changed) with
bare MMEngine in a child process at the same thread count (bench/bare_mmengine.py).
Per epoch is the median interval between epoch ends (trainyard: the stored
epochs' `logged_at`, so the report and whatever delays it count; bare: a
lowest-priority hook after validation); in total is run created to run ended
against child started to child ended, start-up included.
Each pair also trains the config a third time, bare MMEngine with trainyard's
FormattedOnceConfig (MMEngine formats the config with yapf at every checkpoint;
trainyard's child formats it once): the ratio against that is what trainyard
costs besides the saving. Then it trains more runs on the same trainer and
prints the trainer process's resident memory after each, first to last, as a
ratio, and the trainer's CPU time per run.

    .venv/bin/python bench/trainer_overhead.py [--pairs 3] [--epochs 4] [--memory-runs 20] [--checkpoint-interval 1]
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

TRAINER = "bench-trainer"
THREADS = 1
TRAINYARD_HOOKS = ("Trainyard",)  # the types trainyard adds to a config: its hooks and evaluator metrics
REPO_ROOT = Path(__file__).resolve().parents[1]


def train_by_trainyard(api: httpx.Client, spec: dict[str, Any]) -> tuple[str, list[float], float]:
    """(run id, epoch intervals, run created to ended) of one run, which must succeed."""
    created = api.post("/v1/runs", json=spec)
    created.raise_for_status()
    run_id = created.json()["id"]
    deadline = time.monotonic() + 1800
    while (run := api.get(f"/v1/runs/{run_id}").json())["status"] not in {"success", "failed", "terminated"}:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not end within 30 min")
        time.sleep(0.5)
    if run["status"] != "success":
        raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('message')}")
    epochs = api.get(f"/v1/runs/{run_id}/logs", params={"kind": "epoch"}).json()["items"]
    ends = [datetime.fromisoformat(e["logged_at"]).timestamp() for e in sorted(epochs, key=lambda e: e["epoch"])]
    total = (datetime.fromisoformat(run["completed_at"]) - datetime.fromisoformat(run["created_at"])).total_seconds()
    return run_id, intervals(ends), total


def bare_config(served: str, work_dir: Path) -> str:
    """The served config without trainyard's hooks, writing under work_dir."""
    from mmengine.config import Config

    cfg = Config.fromstring(served, ".py")
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if not str(h["type"]).startswith(TRAINYARD_HOOKS)]
    for key in ("val_evaluator", "test_evaluator"):
        # trainyard's evaluator metrics (services/trainer/evaluation.py); its COCO metric becomes the
        # one a bare MMEngine user evaluates with: MMDetection's CocoMetric, at COCO's 100 detections.
        metrics = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        cfg[key] = [
            {"type": "CocoMetric", "ann_file": m["ann_file"], "metric": "bbox", "classwise": True,
             "proposal_nums": [1, 10, 100], "format_only": False} if m["type"] == "TrainyardCocoMetric" else m
            for m in metrics if m["type"] == "TrainyardCocoMetric" or not str(m["type"]).startswith(TRAINYARD_HOOKS)
        ]
    checkpoint = cfg.default_hooks.checkpoint
    # MMEngine's own CheckpointHook, at the same interval: trainyard's subclass also saves a new best
    # epoch and a stopped one in full, which a latest-strategy run never asks for.
    checkpoint.type = "CheckpointHook"
    if str(checkpoint.get("save_best", "")).startswith("trainyard/"):
        # trainyard's evaluator metrics put trainyard/<metric> into the results; bare MMEngine has coco/.
        checkpoint.save_best = "coco/" + checkpoint.save_best.removeprefix("trainyard/")
    cfg.work_dir = str(work_dir)
    cfg.load_from, cfg.resume = None, False
    path = work_dir / "config.py"
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(path))
    return str(path)


def train_bare(config_file: str, work_dir: Path, formatted_once: bool = False) -> tuple[list[float], float]:
    times_file = work_dir / ("epoch_ends_once.json" if formatted_once else "epoch_ends.json")
    started = time.time()
    subprocess.run([sys.executable, "-m", "bench.bare_mmengine", config_file, str(times_file), str(THREADS),
                    *(["formatted-once"] if formatted_once else [])],
                   cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": str(THREADS),
                        "MKL_NUM_THREADS": str(THREADS), "PATH": "/usr/bin:/bin"})
    total = time.time() - started
    return intervals(json.loads(times_file.read_text())), total


def intervals(ends: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(ends)]


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far (not of its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--memory-runs", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--checkpoint-interval", type=int, default=1,
                        help="the spec's checkpoint.interval: the child saves, and the trainer uploads, every Nth "
                             "epoch and the last (bare MMEngine is given the same interval)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        stack.start(("metrics", "scheduler", "api"))
        try:
            trainer = stack.start_service("trainer", name=TRAINER, TRAINYARD_TRAINER_ID=TRAINER,
                                          TRAINYARD_THREADS=str(THREADS))
            files = write_synthetic_coco(stack.data_dir / "shapes", train_images=args.train_images,
                                         val_images=4, size=args.size)
            with httpx.Client(base_url=stack.api_url, timeout=60,
                              headers={"Authorization": f"Bearer {stack.admin_key}"}) as api:
                dataset = api.post("/v1/datasets", json={"name": "shapes", "path": str(files.root)})
                dataset.raise_for_status()
                spec = {"name": "overhead", "dataset_id": dataset.json()["id"], "architecture": "rtmdet-tiny",
                        "epochs": args.epochs, "batch_size": 4, "input_size": args.size, "seed": 3,
                        "checkpoint": {"strategy": "latest", "interval": args.checkpoint_interval}}
                ours: list[tuple[list[float], float]] = []
                bare: list[tuple[list[float], float]] = []
                once: list[tuple[list[float], float]] = []
                memory = [rss_mb(trainer.pid)]
                cpu = [cpu_s(trainer.pid)]
                for pair in range(args.pairs):
                    run_id, epoch_s, total_s = train_by_trainyard(api, spec)
                    memory.append(rss_mb(trainer.pid))
                    cpu.append(cpu_s(trainer.pid))
                    ours.append((epoch_s, total_s))
                    served = api.get(f"/v1/runs/{run_id}/config").json()["config"]
                    work_dir = Path(tmp) / f"bare-{pair}"
                    config_file = bare_config(served, work_dir)
                    bare.append(train_bare(config_file, work_dir))
                    once.append(train_bare(config_file, work_dir, formatted_once=True))
                    print(f"pair {pair + 1}: trainyard {statistics.median(epoch_s):.2f} s/epoch, {total_s:.1f} s; "
                          f"bare {statistics.median(bare[-1][0]):.2f} s/epoch, {bare[-1][1]:.1f} s; "
                          f"bare formatted once {statistics.median(once[-1][0]):.2f} s/epoch, {once[-1][1]:.1f} s",
                          flush=True)
                for _ in range(max(0, args.memory_runs - args.pairs)):
                    train_by_trainyard(api, spec)
                    memory.append(rss_mb(trainer.pid))
                    cpu.append(cpu_s(trainer.pid))
        finally:
            stack.stop()
    print(f"{args.pairs} interleaved pairs, {args.epochs} epochs of RTMDet-tiny, {args.train_images} images "
          f"at {args.size} px, {THREADS} thread, a checkpoint every {args.checkpoint_interval} epoch(s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for label, baseline in (("bare MMEngine", bare), ("bare MMEngine, config formatted once", once)):
        per_epoch = [statistics.median(o[0]) / statistics.median(b[0]) for o, b in zip(ours, baseline, strict=True)]
        in_total = [o[1] / b[1] for o, b in zip(ours, baseline, strict=True)]
        print(f"per epoch: trainyard / {label} = {statistics.median(per_epoch):.2f} "
              f"(min {min(per_epoch):.2f}, max {max(per_epoch):.2f}; goal <= 1.05)")
        print(f"in total:  trainyard / {label} = {statistics.median(in_total):.2f} "
              f"(min {min(in_total):.2f}, max {max(in_total):.2f}; goal <= 1.10, start-up included)")
    print(f"trainer memory over {len(memory) - 1} runs: {memory[0]:.0f} MB at start, {memory[1]:.0f} MB after "
          f"the first, {memory[-1]:.0f} MB after the last: last / first = {memory[-1] / memory[1]:.2f}; "
          f"per run: {', '.join(f'{m:.0f}' for m in memory[1:])} MB")
    per_run = [later - earlier for earlier, later in itertools.pairwise(cpu)]
    print(f"trainer CPU per run: median {statistics.median(per_run):.2f} s (first {per_run[0]:.2f} s)")


if __name__ == "__main__":
    main()

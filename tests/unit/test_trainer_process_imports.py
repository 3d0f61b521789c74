"""The long-lived trainer process stays small: torch, MMEngine and MMDetection load only in the
training child and in short-lived helpers (services/trainer/accelerators.py, weights.py)."""

import json
import subprocess
import sys
from pathlib import Path

from services.trainer.accelerators import Probe, detect_accelerators, probe, training_device
from shared.settings import TrainerSettings

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mmengine", "mmdet", "pycocotools", "cv2")


def test_the_trainer_imports_no_training_library() -> None:
    # Everything a trainer loads to take, train and finish a run (the session, its checkpoints,
    # the model's weights, the dataset, the hooks' marker files), in a fresh interpreter.
    code = ("import sys, services.trainer.main, services.trainer.session, services.trainer.worker, "
            "services.trainer.checkpoints, services.trainer.weights, services.trainer.drain; "
            f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_the_probe_says_what_torch_sees() -> None:
    import torch

    seen = probe()
    assert seen.cuda == (torch.cuda.is_available() and torch.cuda.device_count() > 0)
    accelerators = detect_accelerators(TrainerSettings(), seen)
    assert training_device(accelerators, seen) == ("cuda" if seen.cuda else "cpu")
    if not seen.cuda:
        assert [(a.name, a.count) for a in accelerators] == [("CPU", 1)]


def test_a_gpu_probe_becomes_the_advertised_model() -> None:
    seen = Probe(cuda=True, gpu_name="NVIDIA H100 80GB HBM3", gpu_count=8, gpu_memory_mb=81559)
    accelerators = detect_accelerators(TrainerSettings(), seen)
    assert [(a.name, a.count, a.memory_mb) for a in accelerators] == [("GPU_H100", 8, 81559)]
    assert training_device(accelerators, seen) == "cuda"
    assert training_device(accelerators, Probe(cuda=False)) == "cpu"  # named a GPU, but torch sees none

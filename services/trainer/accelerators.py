"""What this machine can train on, as the trainer advertises it.

torch is asked in a short-lived process of its own (`python -m
services.trainer.accelerators` prints what it sees as JSON), once at start-up:
imported into the long-lived trainer it cost ~200 MB that the trainer never
used again (the training child imports torch itself).
"""

import json
import re
import subprocess
import sys

from pydantic import BaseModel

from shared.events import Accelerator
from shared.settings import TrainerSettings

# torch's import takes seconds on a busy machine; CUDA's first query can take longer.
PROBE_TIMEOUT_S = 300.0


class Probe(BaseModel):
    """What torch sees on this machine."""

    cuda: bool
    gpu_name: str | None = None
    gpu_count: int = 0
    gpu_memory_mb: int | None = None


def gpu_accelerator_name(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'GPU_H100': the model, as run specs name it."""
    model = re.search(r"\b([A-Z]+\d+[A-Z]*)\b", device_name.upper())
    return f"GPU_{model.group(1)}" if model else "GPU"


def probe_here() -> Probe:
    import torch

    if not (torch.cuda.is_available() and torch.cuda.device_count() > 0):
        return Probe(cuda=False)
    props = torch.cuda.get_device_properties(0)
    return Probe(cuda=True, gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                 gpu_memory_mb=props.total_memory // 2**20)


def probe() -> Probe:
    """probe_here, in a process of its own."""
    done = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True, check=False,
                          timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"asking torch for this machine's accelerators exited with {done.returncode}: {tail}")
    return Probe.model_validate_json(done.stdout.strip().splitlines()[-1])


def detect_accelerators(settings: TrainerSettings, seen: Probe | None = None) -> list[Accelerator]:
    if settings.accelerator_name:
        return [Accelerator(name=settings.accelerator_name, count=max(1, settings.accelerator_count))]
    seen = seen or probe()
    if seen.cuda and seen.gpu_name is not None:
        return [Accelerator(name=gpu_accelerator_name(seen.gpu_name), count=seen.gpu_count,
                            memory_mb=seen.gpu_memory_mb)]
    return [Accelerator(name="CPU", count=1)]


def training_device(accelerators: list[Accelerator], seen: Probe | None = None) -> str:
    if any(a.name.startswith("GPU") for a in accelerators) and (seen or probe()).cuda:
        return "cuda"
    return "cpu"


if __name__ == "__main__":
    print(json.dumps(probe_here().model_dump()))

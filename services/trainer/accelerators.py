"""What this machine can train on, as the trainer advertises it."""

import re

from shared.events import Accelerator
from shared.settings import TrainerSettings


def gpu_accelerator_name(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'GPU_H100': the model, as run specs name it."""
    model = re.search(r"\b([A-Z]+\d+[A-Z]*)\b", device_name.upper())
    return f"GPU_{model.group(1)}" if model else "GPU"


def detect_accelerators(settings: TrainerSettings) -> list[Accelerator]:
    if settings.accelerator_name:
        return [Accelerator(name=settings.accelerator_name, count=max(1, settings.accelerator_count))]
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        props = torch.cuda.get_device_properties(0)
        return [Accelerator(
            name=gpu_accelerator_name(props.name),
            count=torch.cuda.device_count(),
            memory_mb=props.total_memory // 2**20,
        )]
    return [Accelerator(name="CPU", count=1)]


def training_device(accelerators: list[Accelerator]) -> str:
    if any(a.name.startswith("GPU") for a in accelerators):
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"

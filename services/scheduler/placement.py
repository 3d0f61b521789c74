"""Pure placement: which online trainer takes a run, or why none can."""

from dataclasses import dataclass

from shared.specs import AcceleratorRequest


@dataclass(frozen=True)
class TrainerView:
    trainer_id: str
    accelerator_name: str
    accelerator_count: int
    busy: bool
    draining: bool = False


@dataclass(frozen=True)
class Placement:
    trainer_id: str


@dataclass(frozen=True)
class NotPlaced:
    reason: str


def place(request: AcceleratorRequest, online: list[TrainerView]) -> Placement | NotPlaced:
    """The first idle, non-draining trainer with the accelerator name and at least the count."""
    want = f"{request.name} x{request.count}"
    fitting = [
        t for t in online if t.accelerator_name == request.name and t.accelerator_count >= request.count
    ]
    if not fitting:
        return NotPlaced(f"no trainer online with {want}")
    accepting = [t for t in fitting if not t.draining]
    if not accepting:
        return NotPlaced(f"every trainer with {want} is draining")
    idle = [t for t in accepting if not t.busy]
    if not idle:
        return NotPlaced(f"waiting for a free trainer with {want} ({len(accepting)} online, all busy)")
    # Fewest spare accelerators first: keep big machines free for big runs.
    best = min(idle, key=lambda t: (t.accelerator_count, t.trainer_id))
    return Placement(best.trainer_id)

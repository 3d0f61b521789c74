"""Pure placement: the order of the queue, which trainer takes a run, or why none can."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.specs import AcceleratorRequest


@dataclass(frozen=True)
class TrainerView:
    trainer_id: str
    accelerator_name: str
    capacity: int
    free: int
    draining: bool = False


@dataclass(frozen=True)
class QueuedRun:
    run_id: str
    project: str
    priority: int
    created_at: datetime
    accelerator: AcceleratorRequest
    pending_reason: str | None = None
    attempt: int = 0
    # A sweep's trial: at most `sweep_max_concurrent` of the sweep's trials hold trainers at once.
    sweep_id: str | None = None
    sweep_max_concurrent: int = 0
    # The context the API stored with the run: its assignment is a span of the run's trace.
    trace_context: dict[str, str] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class Placement:
    trainer_id: str


@dataclass(frozen=True)
class NotPlaced:
    reason: str


def queue_key(created_at: datetime, priority: int, aging_s: float) -> datetime:
    """A run's place in the queue as one instant: earlier goes first.

    Ordering by priority + waited / aging_s (below) is ordering by
    created_at - priority * aging_s, which does not change while runs wait: the
    run stores it, so the API counts the runs ahead of one with an indexed query."""
    return created_at - timedelta(seconds=priority * aging_s)


def queue_order(runs: list[QueuedRun], now: datetime, aging_s: float) -> list[QueuedRun]:
    """Higher priority first, then older; every `aging_s` waited counts as one priority level,
    so a low-priority run is never starved for ever."""

    def key(run: QueuedRun) -> tuple[float, datetime, str]:
        waited = max(0.0, (now - run.created_at).total_seconds())
        return (-(run.priority + waited / aging_s), run.created_at, run.run_id)

    return sorted(runs, key=key)


def place(request: AcceleratorRequest, online: list[TrainerView]) -> Placement | NotPlaced:
    """A non-draining trainer with the accelerator and enough of it free; the tightest fit wins."""
    want = f"{request.name} x{request.count}"
    fitting = [t for t in online if t.accelerator_name == request.name and t.capacity >= request.count]
    if not fitting:
        return NotPlaced(f"no trainer online with {want}")
    accepting = [t for t in fitting if not t.draining]
    if not accepting:
        return NotPlaced(f"every trainer with {want} is draining")
    free = [t for t in accepting if t.free >= request.count]
    if not free:
        return NotPlaced(f"waiting for {want} to free up ({len(accepting)} trainers online, all busy)")
    # Least spare capacity after placing first: keep big free blocks for big runs.
    best = min(free, key=lambda t: (t.free - request.count, t.trainer_id))
    return Placement(best.trainer_id)

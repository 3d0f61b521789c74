from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.placement import (
    NotPlaced,
    Placement,
    QueuedRun,
    TrainerView,
    place,
    queue_key,
    queue_order,
)
from shared.specs import AcceleratorRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def trainer(tid: str, name: str = "CPU", capacity: int = 1, free: int | None = None,
            draining: bool = False) -> TrainerView:
    return TrainerView(tid, name, capacity, capacity if free is None else free, draining)


def queued(run_id: str, priority: int = 0, waited_s: float = 0, project: str = "p") -> QueuedRun:
    return QueuedRun(run_id, project, priority, NOW - timedelta(seconds=waited_s), AcceleratorRequest())


def test_run_goes_to_a_trainer_with_its_accelerator_name_and_count() -> None:
    online = [trainer("cpu-1"), trainer("gpu-1", "GPU_H100", 2)]
    assert place(AcceleratorRequest(name="GPU_H100", count=2), online) == Placement("gpu-1")
    assert place(AcceleratorRequest(name="CPU"), online) == Placement("cpu-1")


def test_pending_reason_names_the_missing_accelerator() -> None:
    decision = place(AcceleratorRequest(name="GPU_H100", count=2), [trainer("gpu-1", "GPU_H100", 1)])
    assert decision == NotPlaced("no trainer online with GPU_H100 x2")


def test_full_and_draining_trainers_take_nothing() -> None:
    busy = place(AcceleratorRequest(), [trainer("a", free=0)])
    assert isinstance(busy, NotPlaced) and "all busy" in busy.reason
    draining = place(AcceleratorRequest(), [trainer("a", draining=True)])
    assert isinstance(draining, NotPlaced) and "draining" in draining.reason


def test_a_trainer_with_several_accelerators_holds_several_runs() -> None:
    assert place(AcceleratorRequest(name="GPU_A100", count=2), [trainer("t", "GPU_A100", 4, free=2)]) == Placement("t")
    assert isinstance(place(AcceleratorRequest(name="GPU_A100", count=3), [trainer("t", "GPU_A100", 4, free=2)]),
                      NotPlaced)


def test_tightest_fit_keeps_big_blocks_free() -> None:
    online = [trainer("big", "GPU_A100", 8), trainer("small", "GPU_A100", 1)]
    assert place(AcceleratorRequest(name="GPU_A100"), online) == Placement("small")


def test_higher_priority_goes_first_then_older() -> None:
    runs = [queued("old-low", 0, waited_s=60), queued("new-high", 5), queued("older-low", 0, waited_s=120)]
    assert [r.run_id for r in queue_order(runs, NOW, aging_s=3600)] == ["new-high", "older-low", "old-low"]


def test_waiting_ages_a_low_priority_run_past_newer_high_ones() -> None:
    runs = [queued("starving", 0, waited_s=3 * 300 + 1), queued("fresh-high", 3)]
    assert [r.run_id for r in queue_order(runs, NOW, aging_s=300)] == ["starving", "fresh-high"]


@given(st.lists(st.tuples(st.integers(-100, 100), st.integers(0, 10 * 24 * 3600)), min_size=1, max_size=30,
                unique_by=lambda t: t[1]),
       st.sampled_from([1.0, 300.0, 3600.0]))
def test_the_stored_queue_key_orders_runs_as_the_scheduler_does(runs: list[tuple[int, int]], aging_s: float) -> None:
    # The API counts the runs ahead of one by queue_key; it must agree with queue_order at any moment.
    queue = [queued(f"r{i}", priority, waited_s=waited) for i, (priority, waited) in enumerate(runs)]
    by_key = sorted(queue, key=lambda r: (queue_key(r.created_at, r.priority, aging_s), r.created_at))
    for later in (0, 7_200):
        assert queue_order(queue, NOW + timedelta(seconds=later), aging_s) == by_key

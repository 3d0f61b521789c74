from services.scheduler.placement import NotPlaced, Placement, TrainerView, place
from shared.specs import AcceleratorRequest


def trainer(tid: str, name: str = "CPU", count: int = 1, busy: bool = False, draining: bool = False) -> TrainerView:
    return TrainerView(tid, name, count, busy, draining)


def test_run_goes_to_an_idle_trainer_with_its_accelerator() -> None:
    online = [trainer("cpu-1"), trainer("gpu-1", "GPU_H100", 2)]
    assert place(AcceleratorRequest(name="GPU_H100", count=2), online) == Placement("gpu-1")
    assert place(AcceleratorRequest(name="CPU"), online) == Placement("cpu-1")


def test_pending_reason_names_the_missing_accelerator() -> None:
    decision = place(AcceleratorRequest(name="GPU_H100", count=2), [trainer("gpu-1", "GPU_H100", 1)])
    assert decision == NotPlaced("no trainer online with GPU_H100 x2")


def test_busy_and_draining_trainers_take_nothing() -> None:
    assert isinstance(place(AcceleratorRequest(), [trainer("a", busy=True)]), NotPlaced)
    assert "busy" in place(AcceleratorRequest(), [trainer("a", busy=True)]).reason  # type: ignore[union-attr]
    assert "draining" in place(AcceleratorRequest(), [trainer("a", draining=True)]).reason  # type: ignore[union-attr]


def test_smallest_fitting_trainer_is_chosen() -> None:
    online = [trainer("big", "GPU_A100", 8), trainer("small", "GPU_A100", 1)]
    assert place(AcceleratorRequest(name="GPU_A100"), online) == Placement("small")

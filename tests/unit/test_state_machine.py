import itertools

from services.scheduler.state import can_move, sources_of
from shared.status import RunStatus


def test_a_run_moves_forward_through_its_lifecycle() -> None:
    path = [RunStatus.CREATED, RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.SUCCESS]
    assert all(can_move(a, b) for a, b in itertools.pairwise(path))


def test_success_is_final() -> None:
    assert not any(can_move(RunStatus.SUCCESS, target) for target in RunStatus)


def test_other_endings_only_lead_to_a_rerun() -> None:
    for ending in (RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED):
        assert [t for t in RunStatus if can_move(ending, t)] == [RunStatus.RERUN]


def test_a_started_run_cannot_go_back_to_pending_without_a_rerun() -> None:
    assert not can_move(RunStatus.IN_PROGRESS, RunStatus.PENDING)
    assert can_move(RunStatus.IN_PROGRESS, RunStatus.RERUN)
    assert can_move(RunStatus.RERUN, RunStatus.PENDING)


def test_success_comes_from_an_attempt_that_ran() -> None:
    assert sources_of(RunStatus.SUCCESS) == ["in_progress"]

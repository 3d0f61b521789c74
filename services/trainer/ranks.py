"""The few collectives the Trainyard hooks need under distributed data parallel.

Every rank runs every hook, so every rank must make the same collective calls
in the same order; in a single process each is the identity.
"""

from __future__ import annotations

from typing import Any, TypeVar

from mmengine.dist import all_reduce, broadcast_object_list, get_world_size

T = TypeVar("T")


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the ranks; every rank passes the same keys."""
    if get_world_size() == 1:
        return dict(values)
    import torch

    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    all_reduce(tensor, op="sum")  # on the backend's device, copied back in place
    return dict(zip(keys, tensor.tolist(), strict=True))


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    world_size = get_world_size()
    return {k: v / world_size for k, v in sum_over_ranks(values).items()}


def from_rank_0(value: T) -> T:
    """Rank 0's value on every rank."""
    if get_world_size() == 1:
        return value
    box = [value]
    broadcast_object_list(box, src=0)
    return box[0]


def validates_after(runner: Any, epoch: int) -> bool:
    """Whether MMEngine's EpochBasedTrainLoop validates after this (1-based) epoch."""
    loop = runner.train_loop
    if runner.val_loop is None or epoch < getattr(loop, "val_begin", 1):
        return False
    return epoch % getattr(loop, "val_interval", 1) == 0 or epoch == runner.max_epochs

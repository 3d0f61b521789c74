"""Transfer learning: start a run from the weights of a registered model.

The base checkpoint's state_dict is filtered against the new model: keys whose
shapes differ (the classification head when the class count differs) are
dropped, so they keep their fresh initialisation, and the rest is written as a
checkpoint the Runner loads with `load_from` (strict=False). Loading through
`load_from` rather than after the Runner starts matters: the weights then
reach EMAHook's copy too, and are not overwritten by init_weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.events import BaseModelRef

BASE_WEIGHTS_FILE = "base_model.pth"
# Below this fraction of the model's tensors loaded, the checkpoint is not this architecture.
MIN_LOADED_FRACTION = 0.5


class BaseModelError(ValueError):
    """The base model's checkpoint cannot start this run."""


@dataclass(frozen=True)
class Transfer:
    loaded: list[str]
    reinitialised: list[str]


def prepare_base_weights(base: BaseModelRef, model_state: dict[str, Any], out: Path) -> Transfer:
    """Write the base model's weights that fit `model_state` to `out`; say what was left out."""
    import torch

    try:
        checkpoint = torch.load(base.checkpoint, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise BaseModelError(f"base model {base.id}: checkpoint {base.checkpoint} not found") from None
    state = checkpoint.get("state_dict", checkpoint)
    kept: dict[str, Any] = {}
    reinitialised = []
    for key, value in state.items():
        target = model_state.get(key)
        if target is None:
            continue  # not in this model (e.g. a different architecture's extra layers)
        if tuple(value.shape) != tuple(target.shape):
            reinitialised.append(key)
        else:
            kept[key] = value
    # Tensors the checkpoint lacks also keep their fresh initialisation.
    reinitialised += [key for key in model_state if key not in state]
    if len(kept) < MIN_LOADED_FRACTION * len(model_state):
        raise BaseModelError(
            f"base model {base.id}: only {len(kept)} of the model's {len(model_state)} tensors fit; "
            "is it a checkpoint of the same architecture?"
        )
    torch.save({"state_dict": kept, "meta": {"base_model_id": base.id}}, out)
    return Transfer(loaded=sorted(kept), reinitialised=sorted(reinitialised))

"""A model trained from a base model records it (lineage) when it is registered."""

import asyncio
from pathlib import Path
from typing import Any, cast

from services.trainer.session import TrainingSession
from shared.artifacts import ArtifactCache, Artifacts
from shared.events import BaseModelRef, Event, ModelRegistered, RunAssigned
from shared.specs import DatasetLayout, DatasetSplit, RunSpec


def test_registered_model_names_its_base_model(tmp_path: Path) -> None:
    base = BaseModelRef(id="b" * 32, checkpoint="models/base.pth", classes=["a", "b", "c"])
    split = DatasetSplit(annotations="/d/a.json", images="/d/i")
    assignment = RunAssigned(
        run_id="r" * 32, attempt=1, trainer_id="t1",
        spec=RunSpec(name="ft", dataset_id="0" * 32, architecture="rtmdet-tiny", base_model_id=base.id),
        dataset=DatasetLayout(root="/d", train=split, val=split, classes=["a", "b"]),
        base_model=base,
    )
    sent: list[tuple[str, Event, str]] = []

    async def emit(kind: str, event: Event, key: str) -> None:
        sent.append((kind, event, key))

    # Announcing reads nothing from the artifact store: the weights are already there.
    unused_store = ArtifactCache(tmp_path, Artifacts(store=cast(Any, None)))
    session = TrainingSession(assignment, tmp_path, "cpu", 1, emit, unused_store)
    session.last_epoch = 3
    asyncio.run(session._announce_model(weights="models/m.pth"))
    [(kind, event, _)] = sent
    assert kind == "model" and isinstance(event, ModelRegistered)
    assert event.checkpoint == "models/m.pth"
    assert event.base_model_id == base.id and event.classes == ["a", "b"] and event.epochs_completed == 3

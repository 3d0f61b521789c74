"""An attempt's checkpoints in the artifact store: what a later attempt, on any trainer, resumes from.

The training child writes MMEngine checkpoints into the attempt's local work
dir; after each epoch is reported the session stores that epoch's checkpoint
under the attempt's own prefix, records it in the attempt's manifest (with the
run's best epoch by the spec's watched metric), drops what the checkpoint
policy no longer keeps, and announces it (`checkpoint.saved`). The scheduler
records the newest checkpoint of the run's *current* attempt and hands it to
the next attempt (`RunAssigned.resume_from`); a superseded attempt that is
still running writes only under its own prefix and is never recorded.

Retention is fenced: the checkpoint the next attempt resumes from is one of the
superseded attempt's own, so before the scheduler requeues a run it stores the
run's fence (`fence.json`: attempts up to N are superseded), and an attempt at or
below the fence deletes nothing it stored. Its leftovers are ignored, never adopted.

Only reported epochs are stored, so a resume never leaves a hole in the run's
epochs (MMEngine saves epoch N before validating it: a trainer lost in between
holds a checkpoint of an epoch nobody saw).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from shared.artifacts import (
    ArtifactCache,
    CheckpointManifest,
    attempt_prefix,
    checkpoint_name,
    describe_checkpoint,
    model_weights_name,
)
from shared.events import BestCheckpoint, StoredCheckpoint
from shared.specs import LOWER_IS_BETTER, RunSpec

log = logging.getLogger(__name__)

# The newest two are always kept: the newest may be one whose upload a lost
# trainer cut short; the one before it is then what the run resumes from.
MIN_KEPT = 2


class CheckpointStoreError(RuntimeError):
    """The artifact store cannot give a run what it needs to start."""


def improves(spec: RunSpec, epoch: int, name: str, metrics: Mapping[str, float | None],
             best: BestCheckpoint | None) -> BestCheckpoint | None:
    """The new best when this evaluation beats `best` on the watched metric (ties keep the earlier one,
    as MMEngine's CheckpointHook does)."""
    if spec.checkpoint.strategy == "latest":
        return None
    metric = spec.watched_metric
    value = metrics.get(metric)
    if value is None:
        return None  # an epoch without evaluation, or the metric undefined in this one: never the best
    if best is not None and best.metric == metric:
        better = value < best.value if metric in LOWER_IS_BETTER else value > best.value
        if not better:
            return None
    return BestCheckpoint(epoch=epoch, metric=metric, value=value, name=name)


class RunCheckpoints:
    def __init__(self, run_id: str, attempt: int, spec: RunSpec, cache: ArtifactCache,
                 resume_from: StoredCheckpoint | None = None) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.spec = spec
        self.cache = cache
        self.artifacts = cache.artifacts
        self.resume_from = resume_from
        # The best so far carries over from the attempt this one continues.
        self.manifest = CheckpointManifest(attempt=attempt, best=resume_from.best if resume_from else None)
        self.newest: StoredCheckpoint | None = resume_from

    async def resume_point(self) -> Path | None:
        """A local copy of the checkpoint this attempt continues from, or None for a fresh start."""
        if self.resume_from is None:
            return None
        try:
            return await self.cache.fetch(self.resume_from.name)
        except Exception as error:
            raise CheckpointStoreError(
                f"cannot fetch checkpoint {self.resume_from.name} (epoch {self.resume_from.epoch}) "
                f"to resume from: {error}"
            ) from error

    async def store_epoch(self, epoch: int, metrics: Mapping[str, float | None],
                          work_dir: Path) -> StoredCheckpoint | None:
        """Store the checkpoint of a reported epoch, keep what the policy keeps; what was stored."""
        path = work_dir / f"epoch_{epoch}.pth"
        if not path.is_file():
            log.warning("run %s: epoch %d has no checkpoint at %s; not stored", self.run_id, epoch, path)
            return None
        name = checkpoint_name(self.run_id, self.attempt, epoch)
        await self.artifacts.upload_file(name, path, description=describe_checkpoint(epoch, metrics))
        manifest = self.manifest
        best = improves(self.spec, epoch, name, metrics, manifest.best)
        if best is not None:
            manifest = manifest.model_copy(update={"best": best})
        mine = attempt_prefix(self.run_id, self.attempt)
        own_best = manifest.best.name if manifest.best and manifest.best.name.startswith(mine) else None
        manifest, dropped = manifest.keeping(epoch, keep=max(MIN_KEPT, self.spec.checkpoint.keep), own_best=own_best)
        await self.artifacts.write_manifest(self.run_id, manifest)
        self.manifest = manifest
        if dropped and await self._superseded():
            # Its stored epochs may hold what the run resumes from: a superseded attempt deletes nothing.
            log.info("run %s attempt %d is superseded: keeping epochs %s it would have dropped", self.run_id,
                     self.attempt, dropped)
            dropped = []
        for old in dropped:
            await self.artifacts.delete(checkpoint_name(self.run_id, self.attempt, old))
        self.newest = StoredCheckpoint(attempt=self.attempt, epoch=epoch, name=name, best=manifest.best)
        return self.newest

    async def _superseded(self) -> bool:
        """Whether the scheduler fenced this attempt off; when the fence cannot be read, assume so
        (keeping an object costs space, deleting the wrong one costs the run)."""
        try:
            return await self.artifacts.superseded_up_to(self.run_id) >= self.attempt
        except Exception:
            log.warning("run %s: cannot read the retention fence; deleting nothing this epoch", self.run_id,
                        exc_info=True)
            return True

    def final_checkpoint(self) -> tuple[str, int] | None:
        """The stored checkpoint whose weights become the trained model, and its epoch:
        the best one when the policy keeps one, else the newest."""
        best = self.manifest.best
        if self.spec.checkpoint.strategy != "latest" and best is not None:
            return best.name, best.epoch
        if self.newest is not None:
            return self.newest.name, self.newest.epoch
        return None

    async def store_model_weights(self, model_id: str, work_dir: Path) -> tuple[str, int] | None:
        """Store the final epoch's weights (no optimizer state) as the model's; its name and epoch."""
        final = self.final_checkpoint()
        if final is None:
            return None
        name, epoch = final
        local = work_dir / f"epoch_{epoch}.pth"
        if name != checkpoint_name(self.run_id, self.attempt, epoch) or not local.is_file():
            local = await self.cache.fetch(name)  # an earlier attempt (maybe on another machine) trained it
        weights = work_dir / "model_weights.pth"
        await asyncio.to_thread(write_weights, local, weights, {"run_id": self.run_id, "epoch": epoch})
        stored = model_weights_name(model_id)
        await self.artifacts.upload_file(stored, weights, description=describe_checkpoint(epoch, {}))
        weights.unlink(missing_ok=True)
        return stored, epoch


def write_weights(checkpoint: Path, out: Path, meta: dict[str, object]) -> None:
    """The model's state_dict alone: what a fine-tune loads and what a user downloads."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.save({"state_dict": state.get("state_dict", state), "meta": {**state.get("meta", {}), **meta}}, out)

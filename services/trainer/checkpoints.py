"""An attempt's checkpoints in the artifact store: what a later attempt, on any trainer, resumes from.

The training child writes MMEngine checkpoints into the attempt's local work
dir; after each epoch is reported the session stores that epoch's checkpoint
under the attempt's own prefix, records it in the attempt's manifest (with the
run's best epoch by the spec's watched metric), drops what the checkpoint
policy no longer keeps, and announces it (`checkpoint.saved`). The scheduler
records the newest checkpoint of the run's *current* attempt and hands it to
the next attempt (`RunAssigned.resume_from`); a superseded attempt that is
still running writes only under its own prefix and is never recorded.

Retention is fenced by the connection: what the next attempt resumes from is one
of the superseded attempt's own checkpoints, and an attempt is superseded while
it runs only when the scheduler stops hearing its trainer (presumed lost). So an
attempt deletes only epochs it stored since its NATS connection last broke and
was made again; older ones stay (orphans once the run moves on, never holes).

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
        # The connection's reconnect count when each epoch was stored: retention deletes only epochs
        # stored since the connection last broke (see store_epoch).
        self._stored_at: dict[int, int] = {}

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
        # Counted before the upload: one the connection broke during counts as stored before that.
        self._stored_at.setdefault(epoch, self.artifacts.reconnects())
        await self.artifacts.upload_file(name, path, description=describe_checkpoint(epoch, metrics))
        manifest = self.manifest
        best = improves(self.spec, epoch, name, metrics, manifest.best)
        if best is not None:
            manifest = manifest.model_copy(update={"best": best})
        mine = attempt_prefix(self.run_id, self.attempt)
        own_best = manifest.best.name if manifest.best and manifest.best.name.startswith(mine) else None
        manifest, dropped = manifest.keeping(epoch, keep=max(MIN_KEPT, self.spec.checkpoint.keep), own_best=own_best)
        reconnects = self.artifacts.reconnects()
        pinned = [old for old in dropped if self._stored_at.get(old, -1) != reconnects]
        if pinned:
            # Stored before the connection last broke: the scheduler may have presumed this trainer lost
            # meanwhile and handed one of them to the next attempt as `resume_from`. Kept, not deleted.
            log.info("run %s attempt %d keeps epochs %s: stored before its NATS connection broke", self.run_id,
                     self.attempt, pinned)
            dropped = [old for old in dropped if old not in pinned]
        await self.artifacts.write_manifest(self.run_id, manifest)
        self.manifest = manifest
        for old in dropped:
            await self.artifacts.delete(checkpoint_name(self.run_id, self.attempt, old))
        self.newest = StoredCheckpoint(attempt=self.attempt, epoch=epoch, name=name, best=manifest.best)
        return self.newest

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

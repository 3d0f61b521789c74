"""Sweeps, owned by the scheduler once the api stored them: ASHA's rung decisions, the best
trial, the end of a sweep. Every fact is kept in the `sweeps` document (arrivals at each
rung, each trial's metric per epoch), so a restarted scheduler decides exactly as before.
"""

import logging
from datetime import datetime, timedelta

from faststream.nats import NatsBroker
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.asha import RungArrival, decide
from services.scheduler.lifecycle import RunLifecycle
from shared.bus import publish_event
from shared.events import EpochLogged, utcnow
from shared.status import TERMINAL_STATUSES, RunStatus
from shared.store import RUNS, SWEEPS, Document
from shared.subjects import Subjects
from shared.sweeps import RunRungDecided, SweepCompleted, SweepSpec, SweepTrialStopped, best_epoch_value, better

log = logging.getLogger(__name__)
# A successful trial's last epoch may reach this consumer after its completion: the sweep
# waits this long for it before it ends without it.
LAST_EPOCH_GRACE = timedelta(seconds=60)


def best_trial(values: dict[str, dict[str, float | None]], order: list[str],
               direction: str) -> tuple[str, float, int] | None:
    """(run id, value, epoch) of the best metric any trial logged; ties go to the earlier trial and epoch."""
    best: tuple[str, float, int] | None = None
    for run_id in order:
        value, epoch = best_epoch_value(values.get(run_id, {}), direction)
        if value is not None and epoch is not None and (best is None or better(direction, value, best[1])):
            best = (run_id, value, epoch)
    return best


class SweepKeeper:
    def __init__(self, db: AsyncDatabase[Document], lifecycle: RunLifecycle, broker: NatsBroker,
                 subjects: Subjects) -> None:
        self.sweeps = db[SWEEPS]
        self.runs = db[RUNS]
        self.lifecycle = lifecycle
        self.broker = broker
        self.subjects = subjects

    async def epoch_logged(self, event: EpochLogged) -> None:
        """Record a trial's metric; at a rung's epoch decide whether it continues and tell its trainer."""
        run = await self.runs.find_one({"_id": event.run_id}, {"sweep": 1, "attempt": 1, "trainer_id": 1})
        if run is None or not run.get("sweep") or run.get("attempt") != event.attempt:
            return  # not a trial, or a superseded attempt (fenced like every trainer event)
        sweep_id = run["sweep"]["id"]
        sweep = await self.sweeps.find_one({"_id": sweep_id}, {"spec": 1, "project": 1})
        if sweep is None:
            return
        spec = SweepSpec.model_validate(sweep["spec"])
        value = event.metrics.get(spec.metric)
        await self.sweeps.update_one({"_id": sweep_id},
                                     {"$set": {f"values.{event.run_id}.e{event.epoch}": value,
                                               "updated_at": utcnow()}})
        rungs = spec.searcher.rung_epochs()
        if event.epoch not in rungs:
            return
        rung = rungs.index(event.epoch)
        # The first arrival is kept: a redelivered epoch or a resumed attempt is decided the same way.
        await self.sweeps.update_one({"_id": sweep_id, f"rungs.r{rung}.{event.run_id}": {"$exists": False}},
                                     {"$set": {f"rungs.r{rung}.{event.run_id}": {"value": value, "at": utcnow()}}})
        stored = await self.sweeps.find_one({"_id": sweep_id}, {f"rungs.r{rung}": 1})
        arrivals = [RungArrival(rid, entry.get("value"), entry["at"])
                    for rid, entry in ((stored or {}).get("rungs", {}).get(f"r{rung}", {})).items()]
        eta = spec.searcher.reduction_factor
        decision = decide(arrivals, event.run_id, eta, spec.direction)
        shown = "undefined" if value is None else f"{value:.4g}"
        standing = (f"{spec.metric} {shown} ranks {decision.rank + 1} of the {decision.arrived} trials that "
                    f"reached rung {rung + 1} (epoch {event.epoch}); the top {decision.keep} (1/{eta}) continue")
        if decision.proceed:
            message = f"continues past ASHA rung {rung + 1}: {standing}"
        else:
            message = f"stopped by ASHA at rung {rung + 1}: {standing}"
            await self.runs.update_one({"_id": event.run_id}, {"$set": {"sweep.stop_message": message}})
            await self.sweeps.update_one({"_id": sweep_id}, {"$set": {f"stopped.{event.run_id}": {
                "rung": rung, "epoch": event.epoch, "value": value, "message": message}}})
            await publish_event(
                self.broker, self.subjects, self.subjects.sweep_trial_stopped,
                SweepTrialStopped(sweep_id=sweep_id, project=sweep["project"], run_id=event.run_id, rung=rung,
                                  epoch=event.epoch, value=value, message=message),
                dedup_key=f"{event.run_id}:trial-stopped")
        log.info("sweep %s run %s: %s", sweep_id, event.run_id, message)
        await publish_event(
            self.broker, self.subjects, self.subjects.run_rung_decided(run["trainer_id"]),
            RunRungDecided(run_id=event.run_id, attempt=event.attempt, trainer_id=run["trainer_id"],
                           epoch=event.epoch, proceed=decision.proceed, message=message),
            dedup_key=f"{event.run_id}:{event.attempt}:rung:{event.epoch}")

    async def kill(self, sweep_id: str) -> None:
        """A user killed the sweep: every trial still queued or training is killed; the sweep ends `killed`."""
        await self.sweeps.update_one({"_id": sweep_id, "status": "running"},
                                     {"$set": {"kill_requested": True, "updated_at": utcnow()}})
        sweep = await self.sweeps.find_one({"_id": sweep_id}, {"trial_run_ids": 1})
        for run_id in (sweep or {}).get("trial_run_ids", []):
            await self.lifecycle.kill(run_id)

    async def watch(self, now: datetime) -> None:
        """End the sweeps whose trials have all ended (the periodic pass: no event needed)."""
        async for sweep in self.sweeps.find({"status": "running"}):
            trials = {doc["_id"]: doc async for doc in self.runs.find(
                {"_id": {"$in": sweep["trial_run_ids"]}}, {"status": 1, "completed_at": 1, "epochs_completed": 1})}
            # A trial a person removed counts as ended.
            if any(doc["status"] not in TERMINAL_STATUSES for doc in trials.values()):
                continue
            values: dict[str, dict[str, float | None]] = sweep.get("values", {})
            waiting = [rid for rid, doc in trials.items()
                       if doc["status"] == str(RunStatus.SUCCESS) and doc.get("epochs_completed")
                       and f"e{doc['epochs_completed']}" not in values.get(rid, {})
                       and doc.get("completed_at") and now - doc["completed_at"] < LAST_EPOCH_GRACE]
            if waiting:
                continue
            spec = SweepSpec.model_validate(sweep["spec"])
            best = best_trial(values, sweep["trial_run_ids"], spec.direction)
            status = "killed" if sweep.get("kill_requested") else "completed"
            fields: Document = {"status": status, "completed_at": now, "updated_at": now,
                                "best": {"run_id": best[0], "value": best[1], "epoch": best[2]} if best else None}
            # Announced before it is stored: if the store fails, the next pass announces it again
            # (the same key, dropped by the stream) and stores it; it is never stored unannounced.
            await publish_event(
                self.broker, self.subjects, self.subjects.sweep_completed,
                SweepCompleted(sweep_id=sweep["_id"], project=sweep["project"], status=status,
                               best_run_id=best[0] if best else None, best_value=best[1] if best else None),
                dedup_key=f"{sweep['_id']}:completed")
            await self.sweeps.update_one({"_id": sweep["_id"], "status": "running"}, {"$set": fields})
            log.info("sweep %s %s; best trial %s", sweep["_id"], status, best)

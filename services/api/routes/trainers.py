from datetime import timedelta

from fastapi import APIRouter

from services.api.auth import TrainersReader
from services.api.deps import Settings, Store
from services.api.errors import problem_responses
from services.api.models import TrainerOut, TrainerRun
from shared.events import utcnow

router = APIRouter(prefix="/v1/trainers", tags=["trainers"], responses=problem_responses(403))


@router.get("")
async def list_trainers(caller: TrainersReader, store: Store, settings: Settings) -> list[TrainerOut]:
    """Trainers known from their heartbeats, with health, capacity and the caller's project's runs on them."""
    now = utcnow()
    runs_by_trainer: dict[str, list[TrainerRun]] = {}
    for run in await store.runs_on_trainers(caller.project):
        runs_by_trainer.setdefault(run["trainer_id"], []).append(
            TrainerRun(run_id=run["_id"], status=run["status"], attempt=run.get("attempt", 0)))
    out = []
    for doc in await store.list_trainers():
        silent = now - doc["last_seen"] > timedelta(seconds=settings.trainer_timeout_s)
        health = "lost" if doc.get("lost") else "silent" if silent else "online"
        out.append(TrainerOut(
            id=doc["_id"], host=doc.get("host", ""), health=health, accelerators=doc.get("accelerators", []),
            capacity=int(doc.get("capacity", 0)), free=int(doc.get("free", 0)), draining=bool(doc.get("draining")),
            version=doc.get("version"), last_seen=doc["last_seen"], runs=runs_by_trainer.get(doc["_id"], []),
        ))
    return out

"""Composition root of a trainer: one per machine or GPU set."""

import asyncio

from faststream import FastStream

from services.trainer.handlers import build_router
from services.trainer.worker import Trainer
from shared.bus import make_broker
from shared.settings import TrainerSettings
from shared.subjects import Subjects
from shared.telemetry import setup_telemetry


def build_app(settings: TrainerSettings) -> FastStream:
    setup_telemetry("trainer", settings)
    subjects = Subjects(settings.subject_prefix)
    broker = make_broker(settings, "trainer")
    trainer = Trainer(settings, broker, subjects)
    broker.include_router(build_router(trainer, subjects))
    app = FastStream(broker)
    tasks: set[asyncio.Task[None]] = set()

    @app.after_startup
    async def start_heartbeats() -> None:
        tasks.add(asyncio.create_task(trainer.heartbeat_forever()))

    @app.on_shutdown
    async def drain() -> None:
        # SIGTERM (Kubernetes, `trainyard down`): finish or hand back, then go.
        await trainer.drain()
        for task in tasks:
            task.cancel()

    return app


if __name__ == "__main__":
    asyncio.run(build_app(TrainerSettings()).run())

"""Composition root of the scheduler."""

import asyncio

from faststream import FastStream

from services.scheduler.handlers import build_router
from services.scheduler.lifecycle import RunLifecycle
from services.scheduler.scheduling import Scheduler
from services.scheduler.store import SchedulerStore
from services.scheduler.sweeps import SweepKeeper
from services.scheduler.telemetry import refresh_gauges_forever
from shared.bus import make_broker
from shared.settings import SchedulerSettings
from shared.store import database, mongo_client
from shared.subjects import Subjects
from shared.telemetry import setup_telemetry


def build_app(settings: SchedulerSettings) -> FastStream:
    setup_telemetry("scheduler", settings)
    subjects = Subjects(settings.subject_prefix)
    client = mongo_client(settings)
    store = SchedulerStore(database(client, settings))
    broker = make_broker(settings, "scheduler")
    lifecycle = RunLifecycle(store, broker, subjects, settings.aging_s)
    sweeps = SweepKeeper(database(client, settings), lifecycle, broker, subjects)
    scheduler = Scheduler(store, lifecycle, broker, subjects, settings, sweeps)
    broker.include_router(build_router(scheduler, subjects, sweeps))
    app = FastStream(broker)
    tasks: set[asyncio.Task[None]] = set()

    @app.on_startup
    async def prepare_storage() -> None:
        await store.ensure_indexes()

    @app.after_startup
    async def start_placement_loop() -> None:
        tasks.add(asyncio.create_task(scheduler.run_forever()))
        tasks.add(asyncio.create_task(refresh_gauges_forever(store, settings)))

    @app.on_shutdown
    async def stop_placement_loop() -> None:
        for task in tasks:
            task.cancel()

    @app.after_shutdown
    async def close_storage() -> None:
        await client.close()

    return app


if __name__ == "__main__":
    asyncio.run(build_app(SchedulerSettings()).run())

"""Composition root of the metrics service."""

from faststream import FastStream

from services.metrics.handlers import build_router
from services.metrics.store import MetricsStore
from shared.bus import make_broker
from shared.settings import MetricsSettings
from shared.store import database, mongo_client
from shared.subjects import Subjects
from shared.telemetry import setup_telemetry


def build_app(settings: MetricsSettings) -> FastStream:
    setup_telemetry("metrics", settings)
    subjects = Subjects(settings.subject_prefix)
    client = mongo_client(settings)
    store = MetricsStore(database(client, settings))
    broker = make_broker(settings, "metrics")
    broker.include_router(build_router(store, subjects))
    app = FastStream(broker)

    @app.on_startup
    async def prepare_storage() -> None:
        await store.ensure_indexes()
        await store.backfill_latest_epochs()
        await store.backfill_best_epochs()

    @app.after_shutdown
    async def close_storage() -> None:
        await client.close()

    return app


if __name__ == "__main__":
    import asyncio

    asyncio.run(build_app(MetricsSettings()).run())

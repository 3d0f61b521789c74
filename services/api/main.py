"""Composition root of the HTTP gateway."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from prometheus_client import make_asgi_app

from services.api.errors import install_error_handlers
from services.api.routes import architectures, datasets, runs, trainers
from services.api.store import ApiStore
from services.api.telemetry import install_http_telemetry
from shared.bus import ensure_stream, make_broker
from shared.settings import ApiSettings
from shared.store import database, mongo_client
from shared.subjects import Subjects
from shared.telemetry import setup_telemetry


def create_app(settings: ApiSettings) -> FastAPI:
    setup_telemetry("api", settings)
    subjects = Subjects(settings.subject_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = mongo_client(settings)
        store = ApiStore(database(client, settings))
        await store.ensure_indexes()
        broker = make_broker(settings, "api")
        await broker.connect()
        await ensure_stream(broker, subjects)
        app.state.store, app.state.broker, app.state.subjects = store, broker, subjects
        app.state.settings = settings
        try:
            yield
        finally:
            await broker.stop()
            await client.close()

    app = FastAPI(
        title="trainyard",
        version="0.1.0",
        description="Managed MMDetection training runs",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_http_telemetry(app)
    for module in (datasets, runs, architectures, trainers):
        app.include_router(module.router)
    app.mount("/metrics", make_asgi_app())

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    settings = ApiSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())

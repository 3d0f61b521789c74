"""Composition root of the HTTP gateway."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import make_asgi_app
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.api.auth import authenticate
from services.api.console.routes import install_console
from services.api.console.sessions import ConsoleStore
from services.api.dataset_upload import is_dataset_upload
from services.api.errors import FieldProblem, Problem, install_error_handlers, problem_responses
from services.api.limits import BodySizeLimit
from services.api.routes import (
    architectures,
    checkpoints,
    compare,
    datasets,
    keys,
    models,
    page_events,
    run_events,
    run_results,
    runs,
    sweeps,
    trainers,
)
from services.api.store import ApiStore
from services.api.telemetry import install_http_telemetry
from shared.artifacts import Artifacts
from shared.bus import ensure_stream, make_broker
from shared.settings import ApiSettings
from shared.store import database, mongo_client
from shared.subjects import Subjects
from shared.telemetry import setup_telemetry


def _install_openapi(app: FastAPI) -> None:
    """The generated schema plus the problem-details shape every error response refers to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (FieldProblem, Problem):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                model_schema.pop("$defs", None)
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ApiSettings) -> FastAPI:
    setup_telemetry("api", settings)
    subjects = Subjects(settings.subject_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = mongo_client(settings)
        store = ApiStore(database(client, settings))
        await store.ensure_indexes()
        console_store = ConsoleStore(database(client, settings))
        await console_store.ensure_indexes()
        app.state.console_store = console_store
        broker = make_broker(settings, "api")
        await broker.connect()
        await ensure_stream(broker, subjects)
        app.state.store, app.state.broker, app.state.subjects = store, broker, subjects
        app.state.artifacts = await Artifacts.open(broker, subjects)
        try:
            yield
        finally:
            await broker.stop()
            await client.close()

    app = FastAPI(
        title="trainyard",
        version="0.1.0",
        description="Managed MMDetection training runs. Every operation needs an API key "
                    "(`Authorization: Bearer <key>`) bound to one project; errors are RFC 9457 problem details.",
        lifespan=lifespan,
        # Secure by default: a route added without thinking of auth still needs a valid key.
        dependencies=[Depends(authenticate)],
        responses=problem_responses(401, 422),
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, own_limit=is_dataset_upload)
    # Added after the body limit, so its metrics also count the requests the limit refuses.
    install_http_telemetry(app)
    # compare and page_events first: /v1/runs/compare and /v1/<list>/events must not be read as ids.
    for module in (compare, page_events, datasets, runs, run_results, run_events, checkpoints, architectures,
                   trainers, keys, models, sweeps):
        app.include_router(module.router)
    app.mount("/metrics", make_asgi_app())
    install_console(app)
    _install_openapi(app)

    async def healthz(request: Request) -> JSONResponse:
        """Liveness: the process answers (no key needed, not part of the API)."""
        return JSONResponse({"status": "ok"})

    app.add_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    return app


if __name__ == "__main__":
    settings = ApiSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())

"""One error shape everywhere: RFC 9457 problem details, documented in the OpenAPI schema."""

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Echoed input values are cut here: an error must not mirror a megabyte back.
MAX_ECHOED_CHARS = 200


class FieldProblem(BaseModel):
    model_config = ConfigDict(extra="allow")

    field: str | None = Field(default=None, description="dotted path of the bad field, e.g. `query.limit`")
    message: str
    value: Any = None


class Problem(BaseModel):
    """RFC 9457 problem details; `errors` names every bad field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldProblem] | None = None


class ApiError(Exception):
    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = HTTPStatus(status).phrase
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


class NotFound(ApiError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(404, f"no {what} with id {ident!r}")


class Gone(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(410, detail)


class Unprocessable(ApiError):
    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(422, detail, errors)


class Conflict(ApiError):
    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(409, detail, headers=headers)


class Unauthorized(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer realm="trainyard"'})


class Forbidden(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


def _echoable(value: Any) -> Any:
    """A JSON scalar safe to echo in an error, or None (containers and bytes are not echoed)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHOED_CHARS else value[:MAX_ECHOED_CHARS] + "…"
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return None


def problem(status: int, detail: str, instance: str, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None, title: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title or HTTPStatus(status).phrase, "status": status,
                            "detail": detail, "instance": instance}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location if part != "body")


def _methods_of_path(request: Request) -> list[str]:
    """Every method some route of the app serves on this request's path."""
    # Asked of the router itself (routes may be nested in included routers), one method at a time.
    methods = []
    for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
        return problem(error.status, error.detail, request.url.path, error.errors, error.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = []
        for item in error.errors():
            entry: dict[str, Any] = {"field": _field_path(tuple(item.get("loc", ()))), "message": item["msg"]}
            if (value := _echoable(item.get("input"))) is not None:
                entry["value"] = value
            errors.append(entry)
        summary = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return problem(422, summary, request.url.path, errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = str(error.detail)
        headers = dict(error.headers or {})
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        if error.status_code == 405:
            # Starlette names only the first route whose path matched; the path may have several.
            allowed = _methods_of_path(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return problem(error.status_code, detail, request.url.path, headers=headers)

    @app.exception_handler(Exception)
    async def on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # The cause stays in the log; the caller learns only that it was not their fault.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the API's log has the details", request.url.path)


_DESCRIPTIONS = {
    400: "A body that cannot be read (not UTF-8, not JSON)",
    401: "Missing, malformed or revoked API key",
    403: "The API key lacks the scope this operation needs",
    404: "No such resource in the key's project",
    409: "Conflict with the resource's current state",
    410: "The resource's stored data is gone",
    413: "Request body larger than the limit",
    422: "Invalid input; `errors` names each bad field",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems an operation can answer with."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }

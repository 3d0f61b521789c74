"""The failures a call raises: a `TrainyardError` subclass per kind, with the API's problem details."""

from typing import Any

import httpx


class TrainyardError(Exception):
    """The API answered with a problem (or could not be reached): status, title, detail, per-field errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                 title: str | None = None) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.title = title or ""
        self.detail = detail
        self.errors = errors or []


class ApiUnreachable(TrainyardError):
    """No answer: the connection failed or timed out."""


class InvalidRequest(TrainyardError):
    """400, 413 or 422: the request itself is wrong; `errors` names each bad field."""


class AuthenticationError(TrainyardError):
    """401: no key, a malformed key, or a revoked one."""


class PermissionDenied(TrainyardError):
    """403: the key lacks the scope the operation needs."""


class NotFoundError(TrainyardError):
    """404: nothing with that id in the key's project."""


class ConflictError(TrainyardError):
    """409: the operation does not fit the resource's current state."""


class ServerError(TrainyardError):
    """5xx: the API failed; its log has the cause."""


_ERRORS_BY_STATUS: dict[int, type[TrainyardError]] = {
    400: InvalidRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFoundError,
    409: ConflictError, 413: InvalidRequest, 422: InvalidRequest,
}


def error_from_response(response: httpx.Response) -> TrainyardError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:500] or response.reason_phrase}
    kind = _ERRORS_BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else TrainyardError)
    errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    return kind(response.status_code, str(body.get("detail")), errors, str(body.get("title") or ""))


class EmptyApiKey(TrainyardError):
    """TRAINYARD_API_KEY is set but empty: an error, never a silent switch to the local admin key."""

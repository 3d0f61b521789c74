"""Who is calling: an API key bound to one project, and the scopes it holds.

Every route needs a valid key (401 otherwise, before anything else is looked
at); a route that reads or changes something also needs its scope (403).
What a key may see is its own project only: the stores filter by project, so
another project's ids answer 404 exactly like ids that do not exist.

The web console's session cookie is the other credential: it stands for one
key, looked up again on every request (a revoked key ends the session), and a
request that changes something must echo the session's CSRF token in the
`X-CSRF-Token` header (a cross-site form cannot read it, so cannot send it).
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.console.sessions import ConsoleStore
from services.api.deps import Store
from services.api.errors import Forbidden, Unauthorized
from shared.apikeys import Scope, grants, parse_key, secret_matches
from shared.console import CSRF_HEADER, SESSION_COOKIE
from shared.events import utcnow

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer ty_<key id>_<secret>` (`trainyard keys create`).",
)


@dataclass(frozen=True)
class Principal:
    key_id: str
    project: str
    scopes: frozenset[str]


async def _session_principal(request: Request, store: Store, token: str) -> Principal:
    """The key behind a console session cookie; 401 when the session or its key is gone, 403 without CSRF."""
    sessions: ConsoleStore = request.app.state.console_store
    session = await sessions.session(token, utcnow())
    if session is None:
        raise Unauthorized("console session expired or signed out: sign in again at /console/")
    doc = await store.api_key(session.key_id)
    if doc is None or doc.get("revoked_at") is not None:
        await sessions.end_session(token)
        raise Unauthorized("the API key of this console session was revoked: sign in again with another key")
    if request.method not in SAFE_METHODS and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header: a change made with the console's session "
                        "cookie must echo its CSRF token")
    return Principal(key_id=session.key_id, project=doc["project"], scopes=frozenset(doc.get("scopes", [])))


async def authenticate(
    request: Request, store: Store, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller's key, checked against its stored hash; 401 when missing, malformed or revoked.

    Without an `Authorization` header the console's session cookie is accepted instead."""
    if credentials is None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            return await _session_principal(request, store, token)
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    parsed = parse_key(credentials.credentials)
    if parsed is None:
        raise Unauthorized("malformed API key: expected ty_<key id>_<secret>")
    key_id, secret = parsed
    doc = await store.api_key(key_id)
    if doc is None or doc.get("revoked_at") is not None or not secret_matches(doc["secret_sha256"], secret):
        raise Unauthorized("invalid or revoked API key")
    return Principal(key_id=key_id, project=doc["project"], scopes=frozenset(doc.get("scopes", [])))


class RequireScope:
    """A dependency that lets a request through only with `scope` (or a scope implying it)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not grants(principal.scopes, self.scope):
            raise Forbidden(f"this API key lacks the {self.scope!s} scope")
        return principal


Authenticated = Annotated[Principal, Depends(authenticate)]
RunsReader = Annotated[Principal, Depends(RequireScope(Scope.RUNS_READ))]
RunsWriter = Annotated[Principal, Depends(RequireScope(Scope.RUNS_WRITE))]
DatasetsReader = Annotated[Principal, Depends(RequireScope(Scope.DATASETS_READ))]
DatasetsWriter = Annotated[Principal, Depends(RequireScope(Scope.DATASETS_WRITE))]
ModelsReader = Annotated[Principal, Depends(RequireScope(Scope.MODELS_READ))]
ModelsPublisher = Annotated[Principal, Depends(RequireScope(Scope.MODELS_PUBLISH))]
TrainersReader = Annotated[Principal, Depends(RequireScope(Scope.TRAINERS_READ))]
Admin = Annotated[Principal, Depends(RequireScope(Scope.ADMIN))]

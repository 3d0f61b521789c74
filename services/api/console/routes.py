"""Console routes outside the versioned API: sign-in, sign-out, one-time links, the static pages.

They are plain Starlette routes, not FastAPI ones, because the app's global
dependency demands a credential and these are where a browser gets one.
"""

import json
import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from services.api.console.sessions import ConsoleStore, Session
from services.api.errors import problem
from services.api.store import ApiStore
from shared.apikeys import parse_key, secret_matches
from shared.console import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, SESSION_TTL
from shared.events import utcnow

STATIC_DIR = Path(__file__).parent / "static"
# Installed by scripts/setup.sh (`npm ci` against package-lock.json); served from here, never from a CDN.
ECHARTS_FILE = Path(__file__).parent / "node_modules" / "echarts" / "dist" / "echarts.min.js"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ConsolePages(StaticFiles):
    """The console's files, and its page for any path without a file extension.

    Pages have addresses of their own (`/console/new`, `/console/datasets/<id>`) that a
    person can bookmark or reload; the one HTML page routes them in the browser
    (a run's page, `/console/runs/<id>`, redirects to its `#/runs/<id>`: `run_page`).
    A missing asset (a name with an extension) still answers 404.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as error:
            if error.status_code != 404 or "." in path.rsplit("/", 1)[-1]:
                raise
            return await super().get_response("index.html", scope)


def _stores(request: Request) -> tuple[ApiStore, ConsoleStore]:
    return request.app.state.store, request.app.state.console_store


def _with_session_cookies(response: Response, request: Request, token: str, session: Session) -> Response:
    secure = request.url.scheme == "https"
    max_age = int(SESSION_TTL.total_seconds())
    # The session cookie is invisible to scripts; the CSRF cookie is read by the page to echo it.
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="strict", secure=secure,
                        path="/")
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, httponly=False, samesite="strict",
                        secure=secure, path="/")
    return response


async def sign_in(request: Request) -> Response:
    """POST /console/session with `{"key": "ty_..."}`: a session cookie for that key."""
    path = request.url.path
    # JSON only: a cross-site HTML form cannot send it, so nobody can sign a browser in as themselves.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return problem(415, "send the key as JSON: Content-Type: application/json, body {\"key\": \"ty_...\"}", path)
    try:
        body: Any = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return problem(400, "body is not JSON: expected {\"key\": \"ty_...\"}", path)
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key:
        return problem(422, "key: an API key is required", path, [{"field": "key", "message": "required"}])
    parsed = parse_key(key.strip())
    if parsed is None:
        return problem(422, "key: malformed API key, expected ty_<key id>_<secret>", path,
                       [{"field": "key", "message": "malformed: expected ty_<key id>_<secret>"}])
    store, sessions = _stores(request)
    doc = await store.api_key(parsed[0])
    if doc is None or doc.get("revoked_at") is not None or not secret_matches(doc["secret_sha256"], parsed[1]):
        return problem(401, "key: invalid or revoked API key", path,
                       [{"field": "key", "message": "invalid or revoked"}])
    token, session = await sessions.create_session(parsed[0], doc["project"], utcnow())
    response = JSONResponse({"key_id": parsed[0], "project": doc["project"], "scopes": doc.get("scopes", [])})
    return _with_session_cookies(response, request, token, session)


async def sign_out(request: Request) -> Response:
    """DELETE /console/session: ends the session (with its CSRF token, like every change)."""
    token = request.cookies.get(SESSION_COOKIE)
    _, sessions = _stores(request)
    if token:
        session = await sessions.session(token, utcnow())
        if session is not None and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
            return problem(403, f"missing or wrong {CSRF_HEADER} header", request.url.path)
        await sessions.end_session(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


async def one_time_sign_in(request: Request) -> Response:
    """GET /console/signin?token=...: a link printed by the local stack, good once and for a few minutes."""
    token = request.query_params.get("token", "")
    path = request.url.path
    if not token or len(token) > 100:
        return problem(400, "query.token: the sign-in link has no token", path,
                       [{"field": "query.token", "message": "required"}])
    store, sessions = _stores(request)
    now = utcnow()
    grant = await sessions.consume_signin_token(token, now)
    if grant is None:
        return problem(400, "query.token: this sign-in link is unknown, already used or expired; "
                            "run `trainyard ui` for a new one", path,
                       [{"field": "query.token", "message": "unknown, used or expired"}])
    doc = await store.api_key(grant["key_id"])
    if doc is None or doc.get("revoked_at") is not None:
        return problem(401, "the API key this link signs in as was revoked", path)
    session_token, session = await sessions.create_session(grant["key_id"], doc["project"], now)
    return _with_session_cookies(RedirectResponse("/console/#/runs", status_code=303), request, session_token,
                                 session)


async def echarts_asset(request: Request) -> Response:
    """GET /console/vendor/echarts.min.js: the charting library the pages import."""
    if not ECHARTS_FILE.is_file():
        return problem(503, "the console's charting library is not installed: run scripts/setup.sh "
                            "(npm ci in services/api/console)", request.url.path)
    # Versioned by package-lock.json, so a browser may keep it for a day without asking again.
    return FileResponse(ECHARTS_FILE, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


async def run_page(request: Request) -> Response:
    """GET /console/runs/<id>: the run's page, which the single-page console shows at #/runs/<id>."""
    run_id = request.path_params["run_id"]
    if not RUN_ID.match(run_id):
        return problem(404, f"path.run_id: {run_id[:40]!r} is not a run id (32 hex digits)", request.url.path,
                       [{"field": "path.run_id", "message": "expected 32 hex digits"}])
    return RedirectResponse(f"/console/#/runs/{run_id}", status_code=307)


async def to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def install_console(app: Starlette) -> None:
    app.add_route("/console/session", sign_in, methods=["POST"], include_in_schema=False)
    app.add_route("/console/session", sign_out, methods=["DELETE"], include_in_schema=False)
    app.add_route("/console/signin", one_time_sign_in, methods=["GET"], include_in_schema=False)
    app.add_route("/", to_console, methods=["GET"], include_in_schema=False)
    # Before the static mount, which would otherwise answer these paths with 404.
    app.add_route("/console/vendor/echarts.min.js", echarts_asset, methods=["GET"], include_in_schema=False)
    app.add_route("/console/runs/{run_id}", run_page, methods=["GET"], include_in_schema=False)
    app.mount("/console", ConsolePages(directory=STATIC_DIR, html=True, check_dir=False), name="console")

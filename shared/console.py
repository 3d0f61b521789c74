"""Web console sign-in: one-time links and sessions, as both of their writers must agree on them.

The local stack (and an operator) writes a one-time sign-in token straight into
MongoDB; the gateway consumes it, once, and gives the browser a session
cookie. Only SHA-256 digests of tokens are stored: like API key secrets they
are 256 random bits, so a stolen database signs nobody in.
"""

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

SESSION_COOKIE = "trainyard_session"
CSRF_COOKIE = "trainyard_csrf"
CSRF_HEADER = "X-CSRF-Token"
SIGNIN_TOKEN_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=12)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def signin_token_document(token: str, key_id: str, project: str, *, now: datetime,
                          ttl: timedelta = SIGNIN_TOKEN_TTL) -> dict[str, Any]:
    """How a one-time sign-in token is stored: its digest, the key it signs in as, and when it expires."""
    return {"_id": token_digest(token), "key_id": key_id, "project": project, "created_at": now,
            "expires_at": now + ttl}


def signin_path(token: str) -> str:
    return f"/console/signin?token={token}"

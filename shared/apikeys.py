"""API keys: their format, how they are stored (hashed), and the scope vocabulary.

Shared because two writers must agree on it: the gateway (`/v1/keys`, and every
request it authenticates) and the operator's `trainyard keys bootstrap`, which
writes a project's first admin key straight into MongoDB.

A key reads `ty_<key id>_<secret>`. Only the key id and the SHA-256 of the
secret are stored: the secret is 256 random bits, so a plain hash is enough
(no slow KDF is needed against guessing) and a stolen database yields no key.
"""

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

KEY_PREFIX = "ty"
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_KEY_RE = re.compile(r"^ty_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    RUNS_READ = "runs:read"
    RUNS_WRITE = "runs:write"
    DATASETS_READ = "datasets:read"
    DATASETS_WRITE = "datasets:write"
    MODELS_READ = "models:read"
    MODELS_PUBLISH = "models:publish"
    TRAINERS_READ = "trainers:read"
    # Everything above within the key's project, and managing its keys.
    ADMIN = "admin"


# Acting on a thing needs seeing it: a write scope carries its read scope.
IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.RUNS_WRITE: frozenset({Scope.RUNS_READ}),
    Scope.DATASETS_WRITE: frozenset({Scope.DATASETS_READ}),
    Scope.MODELS_PUBLISH: frozenset({Scope.MODELS_READ}),
    Scope.ADMIN: frozenset(Scope),
}


def grants(held: Iterable[str], needed: Scope) -> bool:
    """Whether a key holding `held` may do what `needed` protects."""
    known = {Scope(name) for name in held if name in Scope.__members__.values()}
    return any(scope == needed or needed in IMPLIED.get(scope, frozenset()) for scope in known)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY_RE.match(key)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(stored_digest: str, secret: str) -> bool:
    return hmac.compare_digest(stored_digest, secret_digest(secret))


def generate_key() -> str:
    return f"{KEY_PREFIX}_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def key_document(
    key: str, project: str, name: str, scopes: Iterable[Scope], *, created_by: str, now: datetime
) -> dict[str, Any]:
    """How `key` is stored: its id and the hash of its secret, never the secret."""
    parsed = parse_key(key)
    if parsed is None:
        raise ValueError("not a trainyard API key")
    key_id, secret = parsed
    return {
        "_id": key_id,
        "project": project,
        "name": name,
        "scopes": sorted({str(s) for s in scopes}),
        "secret_sha256": secret_digest(secret),
        "created_at": now,
        "created_by": created_by,
        "revoked_at": None,
    }


def new_key(
    project: str, name: str, scopes: Iterable[Scope], *, created_by: str, now: datetime
) -> tuple[str, dict[str, Any]]:
    """A fresh key and the document that stores it; the key itself is shown once and never stored."""
    key = generate_key()
    return key, key_document(key, project, name, scopes, created_by=created_by, now=now)

"""Console sessions in MongoDB: created from an API key or a one-time link, ended by sign-out or revocation.

A session stores the digest of its cookie's token, the API key it stands for
and a CSRF token. Every request made with the cookie looks the key up again
(`services.api.auth`), so revoking the key ends its sessions at once and its
scopes are always the key's current ones.
"""

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.console import SESSION_TTL, new_token, token_digest
from shared.store import CONSOLE_SESSIONS, CONSOLE_SIGNIN_TOKENS, Document


@dataclass(frozen=True)
class Session:
    key_id: str
    project: str
    csrf: str

    def csrf_matches(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf.encode(), sent.encode())


class ConsoleStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.sessions = db[CONSOLE_SESSIONS]
        self.signin_tokens = db[CONSOLE_SIGNIN_TOKENS]

    async def ensure_indexes(self) -> None:
        await self.sessions.create_index([("key_id", ASCENDING)], name="key")

    async def create_session(self, key_id: str, project: str, now: datetime) -> tuple[str, Session]:
        """A new session for the key: (cookie token, session). Expired sessions are dropped on the way."""
        await self.sessions.delete_many({"expires_at": {"$lt": now}})
        token, csrf = new_token(), new_token()
        await self.sessions.insert_one({"_id": token_digest(token), "key_id": key_id, "project": project,
                                        "csrf": csrf, "created_at": now, "expires_at": now + SESSION_TTL})
        return token, Session(key_id=key_id, project=project, csrf=csrf)

    async def session(self, token: str, now: datetime) -> Session | None:
        doc = await self.sessions.find_one({"_id": token_digest(token)})
        if doc is None or doc["expires_at"].replace(tzinfo=now.tzinfo) <= now:
            return None
        return Session(key_id=doc["key_id"], project=doc["project"], csrf=doc["csrf"])

    async def end_session(self, token: str) -> None:
        await self.sessions.delete_one({"_id": token_digest(token)})

    async def consume_signin_token(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The token's document, removed in the same step, so a link works once; None when unknown or expired."""
        doc = await self.signin_tokens.find_one_and_delete({"_id": token_digest(token)})
        if doc is None or doc["expires_at"].replace(tzinfo=now.tzinfo) <= now:
            return None
        return doc

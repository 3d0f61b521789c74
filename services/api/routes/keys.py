"""API keys of the caller's project: admins create, list and revoke them."""

from typing import Annotated

from fastapi import APIRouter, status
from fastapi import Path as PathParam

from services.api.auth import Admin, Authenticated
from services.api.deps import Store
from services.api.errors import NotFound, problem_responses
from services.api.models import ApiKeyList, ApiKeyOut, ApiKeyRequest, CreatedApiKey, WhoAmI
from services.api.views import api_key_out
from shared.apikeys import KEY_ID_PATTERN, new_key
from shared.events import utcnow

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=problem_responses(403))
KeyId = Annotated[str, PathParam(pattern=KEY_ID_PATTERN, description="the key's id (16 hex digits)")]


@router.get("/me")
async def who_am_i(caller: Authenticated) -> WhoAmI:
    """The calling key's id, project and scopes."""
    return WhoAmI(key_id=caller.key_id, project=caller.project, scopes=sorted(caller.scopes))


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(400, 413))
async def create_key(body: ApiKeyRequest, caller: Admin, store: Store) -> CreatedApiKey:
    """A new key in the caller's project; the answer holds the key itself, shown only this once."""
    key, doc = new_key(caller.project, body.name, body.scopes, created_by=caller.key_id, now=utcnow())
    await store.insert_api_key(doc)
    return CreatedApiKey(**api_key_out(doc).model_dump(), key=key)


@router.get("")
async def list_keys(caller: Admin, store: Store) -> ApiKeyList:
    """The project's keys, revoked ones included, oldest first; never their secrets."""
    return ApiKeyList(items=[api_key_out(doc) for doc in await store.list_api_keys(caller.project)])


@router.delete("/{key_id}", responses=problem_responses(404))
async def revoke_key(key_id: KeyId, caller: Admin, store: Store) -> ApiKeyOut:
    """Revoke a key of the project: it stops working at once. Revoking twice changes nothing."""
    doc = await store.revoke_api_key(caller.project, key_id, utcnow())
    if doc is None:
        raise NotFound("API key", key_id)
    return api_key_out(doc)

"""Helpers the integration and end-to-end tests share: polling, private stacks, keys of any project."""

import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient

from shared.apikeys import Scope, new_key
from shared.store import API_KEYS
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient

TERMINAL = {"success", "failed", "aborted", "terminated"}


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_status(client: TrainyardClient, run_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def reached() -> dict[str, Any] | None:
        seen[:] = [dict(client.runs.get(run_id))]
        return seen[0] if seen[0]["status"] in statuses else None

    try:
        return dict(wait_until(reached, timeout, f"run {run_id} to become {statuses}"))
    except AssertionError as timed_out:
        # What it was instead, and how it got there: a failure in CI has nothing else to go on.
        last = seen[0] if seen else {}
        history = [(h["status"], h.get("attempt"), h.get("message")) for h in last.get("history", [])]
        raise AssertionError(f"{timed_out}; it is {last.get('status')} ({last.get('pending_reason') or ''}), "
                             f"history {history}") from None


def private_stack(servers: LocalStack, data_dir: Path) -> LocalStack:
    """Services on the session's servers under their own database and subject prefix."""
    namespace = "t" + uuid.uuid4().hex[:10]
    data_dir.mkdir(parents=True, exist_ok=True)
    return LocalStack(data_dir, nats_url=servers.nats_url, mongo_url=servers.mongo_url,
                      mongo_db=namespace, subject_prefix=namespace)


def create_key(stack: LocalStack, project: str, scopes: list[Scope], name: str = "test") -> str:
    """A key of any project, written as `trainyard keys bootstrap` writes one."""
    key, doc = new_key(project, name, scopes, created_by="test", now=datetime.now(UTC))
    assert stack.mongo_url
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_url)
    with client:
        client[stack.mongo_db][API_KEYS].insert_one(doc)
    return key


def http(stack: LocalStack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.api_url, headers=headers, timeout=30)


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"], body
    return body


async def record_assignment(stack: LocalStack, run_ids: Iterable[str], trainer_id: str, attempt: int = 1) -> None:
    """Store what the scheduler stores when it gives a run's attempt to a trainer, for tests that publish a
    trainer's reports themselves: consumers accept reports only from the trainer holding the attempt."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        await client[stack.mongo_db].runs.update_many(
            {"_id": {"$in": list(run_ids)}}, {"$set": {"trainer_id": trainer_id, "attempt": attempt}})
    finally:
        await client.close()

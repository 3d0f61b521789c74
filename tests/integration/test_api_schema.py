"""Schemathesis against the running gateway: generated requests, valid and invalid, for every
operation of its OpenAPI document; no answer may be a server error or break the document.

Bounded to a few examples per operation so the suite stays fast; for a longer hunt:

    schemathesis run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer $(cat .trainyard/api-key)"
"""

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pymongo import MongoClient
from pymongo.collection import Collection
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.main import create_app
from shared.settings import ApiSettings
from tests.helpers import private_stack
from trainyard.localstack import LocalStack

EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]


@pytest.fixture(scope="module")
def running_api(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = private_stack(servers, tmp_path_factory.mktemp("schemathesis"))
    stack.start_service("api")
    yield stack
    stack.stop()


# The document is built in-process, at collection time, so every operation becomes its own test
# (schemathesis' fixture-based loading does not run under pytest 9); the first test checks it is
# exactly what the running API serves.
OPENAPI = create_app(ApiSettings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES_PER_OPERATION, deterministic=True)
schema.config.phases.update(phases=["examples", "fuzzing"])


def test_running_api_serves_this_document(running_api: LocalStack) -> None:
    assert httpx.get(f"{running_api.api_url}/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES_PER_OPERATION)
def test_no_server_error_and_no_answer_outside_the_schema(case: Any, running_api: LocalStack) -> None:
    case.call_and_validate(base_url=running_api.api_url, checks=CHECKS, timeout=10,
                           headers={"Authorization": f"Bearer {running_api.admin_key}"})


def _linked(document: dict[str, Any]) -> dict[str, Any]:
    """The document with OpenAPI links from what creates (or names) a thing to what uses it, so the
    stateful phase chains real ids; `/events` is left out (a queued run's stream never ends)."""
    document = copy.deepcopy(document)
    paths = document["paths"]

    def link(path: str, method: str, status: str, parameter: str, pointer: str, *targets: tuple[str, str]) -> None:
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for target_path, target_method in targets:
            operation = paths[target_path][target_method]["operationId"]
            links[operation] = {"operationId": operation, "parameters": {parameter: f"$response.body#{pointer}"}}

    link("/v1/keys/me", "get", "200", "key_id", "/id", ("/v1/keys/{key_id}", "delete"))
    link("/v1/keys", "post", "201", "key_id", "/id", ("/v1/keys/{key_id}", "delete"))
    link("/v1/datasets", "post", "201", "dataset_id", "/id", ("/v1/datasets/{dataset_id}", "get"))
    run_operations = [(path, method) for path, operations in paths.items() if path.startswith("/v1/runs/{run_id}")
                      and path.count("{") == 1 and not path.endswith("/events") for method in operations]
    link("/v1/runs", "post", "201", "run_id", "/id", *run_operations)
    return document


def test_stateful_sequences_give_no_server_error(running_api: LocalStack) -> None:
    """Linked calls (create, then read, change and delete what was created), with the fuzzer's key
    restored whenever a generated DELETE /v1/keys/{id} revoked the key it is using: every later
    step would otherwise be a 401 and test nothing."""
    assert running_api.mongo_url
    key_id = running_api.admin_key.split("_")[1]
    keys: Collection[dict[str, Any]] = MongoClient(running_api.mongo_url)[running_api.mongo_db]["api_keys"]
    revocations = []

    linked = schemathesis.openapi.from_dict(_linked(OPENAPI))

    class Workflow(linked.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": running_api.api_url, "timeout": 10,
                    "headers": {"Authorization": f"Bearer {running_api.admin_key}"}}

        def after_call(self, response: Any, case: Any) -> None:
            if keys.find_one({"_id": key_id, "revoked_at": {"$ne": None}}):
                revocations.append(case.path)
                keys.update_one({"_id": key_id}, {"$set": {"revoked_at": None}})

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error])

    Workflow.run(settings=settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=20,
                                   stateful_step_count=6, derandomize=True))

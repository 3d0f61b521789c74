"""Schemathesis against the running gateway: generated requests, valid and invalid, for every
operation of its OpenAPI document; no answer may be a server error or break the document.

Bounded to a few examples per operation so the suite stays fast; for a longer hunt:

    schemathesis run http://127.0.0.1:8000/openapi.json -H "Authorization: Bearer $(cat .trainyard/api-key)"
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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

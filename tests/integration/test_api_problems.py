"""Bad input of every kind gets a problem-details answer, never a server error."""

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import http, private_stack, problem_of
from trainyard.localstack import LocalStack


@pytest.fixture(scope="module")
def api(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    stack = private_stack(servers, tmp_path_factory.mktemp("problems"))
    stack.start_service("api", TRAINYARD_MAX_REQUEST_BYTES="4096")
    with http(stack, stack.admin_key) as client:
        yield client
    stack.stop()


def test_oversized_bodies_are_refused_with_413(api: httpx.Client) -> None:
    big = {"name": "x" * 5000, "path": "/"}
    assert "4096 bytes" in problem_of(api.post("/v1/datasets", json=big), 413)["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"name": "'
        yield b"x" * 5000
        yield b'", "path": "/"}'

    problem_of(api.post("/v1/datasets", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_unreadable_bodies_and_unknown_routes_are_problems(api: httpx.Client) -> None:
    invalid_json = api.post("/v1/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert problem_of(invalid_json, 422)["errors"][0]["message"].startswith("JSON decode error")
    problem_of(api.post("/v1/runs", content=b'{"name": "\xff\xfe"}', headers={"content-type": "application/json"}),
               400)
    problem_of(api.get("/v1/nothing-here"), 404)
    not_allowed = api.put("/v1/runs")
    problem_of(not_allowed, 405)
    assert not_allowed.headers["allow"]


@pytest.mark.parametrize("path", ["/v1/runs/ABC", "/v1/runs/" + "a" * 33, "/v1/datasets/%00",
                                  "/v1/keys/xyz", "/v1/runs?limit=1e9", "/v1/runs?cursor=%FF",
                                  "/v1/runs?search=%00", "/v1/runs/" + "a" * 32 + "/confusion-matrix?epoch=-1",
                                  "/v1/runs/" + "a" * 32 + "/best-epoch?metric=$where"])
def test_bad_ids_and_parameters_name_the_field(api: httpx.Client, path: str) -> None:
    method = "DELETE" if path.startswith("/v1/keys") else "GET"
    body = problem_of(api.request(method, path), 422)
    assert body["errors"][0]["field"], body


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("OPTIONS", "/v1/datasets", "GET, POST"), ("PATCH", "/v1/runs", "GET, POST"), ("FOO", "/v1/runs", "GET, POST"),
    ("PUT", "/v1/runs/" + "a" * 32, "DELETE, GET"), ("TRACE", "/v1/keys/abc", "DELETE"),
])
def test_a_method_a_path_does_not_serve_is_405_naming_every_method_it_does(
    api: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = api.request(method, path)
    assert problem_of(response, 405)["detail"].endswith(f"allowed: {allowed}")
    assert response.headers["allow"] == allowed


def test_only_the_schema_docs_metrics_and_liveness_answer_without_a_key(api: httpx.Client) -> None:
    with httpx.Client(base_url=api.base_url, follow_redirects=True) as anonymous:
        for path in ("/openapi.json", "/docs", "/metrics", "/healthz"):
            assert anonymous.get(path).status_code == 200, path
        metrics = anonymous.get("/metrics").text
        assert "project" not in metrics  # counts by route and status only: nothing of any project's data
        for path in ("/v1/runs", "/v1/datasets", "/v1/keys/me", "/v1/trainers", "/v1/architectures"):
            assert problem_of(anonymous.get(path), 401)["detail"].startswith("missing API key"), path

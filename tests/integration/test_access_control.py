"""API keys against the gateway as a process: 401 without a valid key, 403 without the scope,
404 for anything of another project (exactly as for ids that do not exist)."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.apikeys import Scope
from tests.helpers import create_key, http, private_stack, problem_of
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

UNKNOWN_ID = "0" * 32


@dataclass
class Project:
    admin: httpx.Client
    dataset_id: str
    run_id: str


@dataclass
class World:
    stack: LocalStack
    alpha: Project
    beta: Project


def _project(stack: LocalStack, key: str, data: Path) -> Project:
    admin = http(stack, key)
    dataset = admin.post("/v1/datasets", json={"name": "shapes", "path": str(data)})
    assert dataset.status_code == 201, dataset.text
    run = admin.post("/v1/runs", json={"name": "r", "dataset_id": dataset.json()["id"],
                                       "architecture": "rtmdet-tiny", "epochs": 1})
    assert run.status_code == 201, run.text
    return Project(admin, dataset.json()["id"], run.json()["id"])


@pytest.fixture(scope="module")
def world(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access")
    stack = private_stack(servers, root / "stack")
    stack.start_service("api")
    data = write_synthetic_coco(root / "shapes", train_images=2, val_images=1, size=64).root
    alpha = _project(stack, stack.admin_key, data)
    beta = _project(stack, create_key(stack, "beta", [Scope.ADMIN]), data)
    yield World(stack, alpha, beta)
    alpha.admin.close()
    beta.admin.close()
    stack.stop()


def _key_with(world: World, *scopes: Scope) -> str:
    created = world.alpha.admin.post("/v1/keys", json={"name": "limited", "scopes": [str(s) for s in scopes]})
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def run_routes(run_id: str) -> list[str]:
    return [f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/logs", f"/v1/runs/{run_id}/metrics",
            f"/v1/runs/{run_id}/best-epoch", f"/v1/runs/{run_id}/confusion-matrix", f"/v1/runs/{run_id}/events",
            f"/v1/runs/{run_id}/previews", f"/v1/runs/{run_id}/previews/1/1"]


def test_every_route_answers_401_without_a_valid_key(world: World) -> None:
    schema = world.alpha.admin.get("/openapi.json").json()
    revoked = _key_with(world, Scope.RUNS_READ)
    assert world.alpha.admin.delete(f"/v1/keys/{revoked.split('_')[1]}").status_code == 200
    bad_keys: list[str | None] = [None, "not-a-key", "ty_0123456789abcdef_" + "A" * 43, revoked]
    operations = [(method, path.replace("{run_id}", UNKNOWN_ID).replace("{dataset_id}", UNKNOWN_ID)
                   .replace("{key_id}", "0" * 16).replace("{epoch}", "1").replace("{image_id}", "1"))
                  for path, item in schema["paths"].items() for method in item]
    assert len(operations) >= 12
    for key in bad_keys:
        with http(world.stack, key) as client:
            for method, path in operations:
                response = client.request(method.upper(), path, json={} if method == "post" else None)
                body = problem_of(response, 401)
                assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
                assert "key" in body["detail"], body


def test_other_projects_runs_are_404_like_unknown_ones(world: World) -> None:
    alpha, beta = world.alpha.admin, world.beta
    for path in run_routes(beta.run_id):
        body = problem_of(alpha.get(path), 404)
        unknown = problem_of(alpha.get(path.replace(beta.run_id, UNKNOWN_ID)), 404)
        assert body["detail"] == unknown["detail"].replace(UNKNOWN_ID, beta.run_id), (path, body, unknown)
    # and beta still sees its own
    assert world.beta.admin.get(f"/v1/runs/{beta.run_id}").status_code == 200


def test_other_projects_run_cannot_be_killed_rerun_or_removed(world: World) -> None:
    for action in ("kill", "rerun"):
        body = problem_of(world.alpha.admin.post(f"/v1/runs/{world.beta.run_id}/{action}"), 404)
        assert body["detail"] == f"no run with id {world.beta.run_id!r}"
    body = problem_of(world.alpha.admin.delete(f"/v1/runs/{world.beta.run_id}"), 404)
    assert body["detail"] == f"no run with id {world.beta.run_id!r}"
    assert world.beta.admin.get(f"/v1/runs/{world.beta.run_id}").json()["status"] == "created"


def test_listings_show_only_the_keys_project(world: World) -> None:
    alpha, beta = world.alpha, world.beta
    assert [r["id"] for r in alpha.admin.get("/v1/runs").json()["items"]] == [alpha.run_id]
    assert [r["id"] for r in beta.admin.get("/v1/runs").json()["items"]] == [beta.run_id]
    for search in (beta.run_id, beta.run_id[:8]):
        assert alpha.admin.get("/v1/runs", params={"search": search}).json()["items"] == []
    assert [d["id"] for d in alpha.admin.get("/v1/datasets").json()["items"]] == [alpha.dataset_id]
    problem_of(alpha.admin.get(f"/v1/datasets/{beta.dataset_id}"), 404)
    assert {k["project"] for k in alpha.admin.get("/v1/keys").json()["items"]} == {"default"}


def test_other_projects_dataset_cannot_be_trained_on(world: World) -> None:
    spec = {"name": "steal", "dataset_id": world.beta.dataset_id, "architecture": "rtmdet-tiny"}
    body = problem_of(world.alpha.admin.post("/v1/runs", json=spec), 422)
    assert body["detail"] == f"dataset_id: no dataset with id {world.beta.dataset_id!r}"


def test_other_projects_key_cannot_be_revoked(world: World) -> None:
    beta_key_id = world.beta.admin.get("/v1/keys/me").json()["key_id"]
    problem_of(world.alpha.admin.delete(f"/v1/keys/{beta_key_id}"), 404)
    assert world.beta.admin.get("/v1/keys/me").status_code == 200


def test_missing_scope_is_403_naming_the_scope(world: World) -> None:
    reader = http(world.stack, _key_with(world, Scope.RUNS_READ))
    with reader:
        assert reader.get(f"/v1/runs/{world.alpha.run_id}").status_code == 200
        denied = [
            (reader.post("/v1/runs", json={"name": "x"}), "runs:write"),
            (reader.get("/v1/datasets"), "datasets:read"),
            (reader.post("/v1/datasets", json={"name": "x", "path": "/"}), "datasets:write"),
            (reader.get("/v1/keys"), "admin"),
            (reader.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}), "admin"),
        ]
        for response, scope in denied:
            assert problem_of(response, 403)["detail"] == f"this API key lacks the {scope} scope"
        # The scope is checked before the id: no hint whether another project's run exists.
        problem_of(reader.get(f"/v1/datasets/{world.beta.dataset_id}"), 403)


def test_write_scope_implies_read_and_admin_implies_all(world: World) -> None:
    with http(world.stack, _key_with(world, Scope.RUNS_WRITE)) as writer:
        assert writer.get("/v1/runs").status_code == 200
        problem_of(writer.get("/v1/datasets"), 403)
    me = world.alpha.admin.get("/v1/keys/me").json()
    assert me["project"] == "default" and me["scopes"] == ["admin"]


def test_revoked_key_stops_working_at_once(world: World) -> None:
    key = _key_with(world, Scope.RUNS_READ)
    with http(world.stack, key) as client:
        assert client.get("/v1/runs").status_code == 200
        revoked = world.alpha.admin.delete(f"/v1/keys/{key.split('_')[1]}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert problem_of(client.get("/v1/runs"), 401)["detail"] == "invalid or revoked API key"
    listed = {k["id"]: k for k in world.alpha.admin.get("/v1/keys").json()["items"]}
    assert listed[key.split("_")[1]]["revoked_at"] is not None
    assert all("secret" not in str(k) and "key" not in k for k in listed.values())

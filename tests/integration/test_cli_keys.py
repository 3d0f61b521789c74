"""`trainyard keys ...` against the gateway: bootstrap a project's first admin key, then manage keys with it."""

import json

from typer.testing import CliRunner

from trainyard.localstack import LocalStack
from trainyard_client.cli import app


def test_bootstrap_then_create_list_revoke(stack: LocalStack) -> None:
    stack.start_service("api")
    assert stack.mongo_url
    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_MONGO_URL": stack.mongo_url,
                         "TRAINYARD_MONGO_DB": stack.mongo_db, "COLUMNS": "200"})

    def trainyard(*args: str, key: str | None = None, exit_code: int = 0) -> str:
        result = cli.invoke(app, [*args, *(["--api-key", key] if key else [])])
        assert result.exit_code == exit_code, (args, result.output)
        return result.output

    admin = trainyard("keys", "bootstrap", "--project", "gamma").strip().splitlines()[-1]
    assert json.loads(trainyard("keys", "me", "--json", key=admin)) == {
        "key_id": admin.split("_")[1], "project": "gamma", "scopes": ["admin"]}

    created = json.loads(trainyard("keys", "create", "reader", "--scope", "runs:read", "--json", key=admin))
    assert created["project"] == "gamma" and created["scopes"] == ["runs:read"]
    reader = created["key"]
    assert "status" in trainyard("runs", "list", key=reader)  # an (empty) table, not an error
    denied = trainyard("datasets", "list", key=reader, exit_code=1)
    assert "error 403: this API key lacks the datasets:read scope" in denied

    listed = trainyard("keys", "list", key=admin)
    assert "reader" in listed and "runs:read" in listed and created["id"] in listed
    assert "revoked" in trainyard("keys", "revoke", created["id"], key=admin)
    assert "error 401: invalid or revoked API key" in trainyard("runs", "list", key=reader, exit_code=1)
    assert "error 401" in trainyard("runs", "list", key="ty_nonsense", exit_code=1)
    trainyard("keys", "create", "x", "--scope", "root", key=admin, exit_code=2)  # not a scope: usage error
    assert "project must match" in trainyard("keys", "bootstrap", "--project", "Bad Name", exit_code=2)

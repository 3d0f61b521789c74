"""`trainyard keys ...`: API keys of your project (`bootstrap` comes with the platform)."""

from enum import StrEnum
from typing import Annotated

import typer

from trainyard_client import TrainyardClient
from trainyard_client.cli import common
from trainyard_client.cli.common import api_command, console, show_table, when
from trainyard_client.types import ApiKey, CreatedApiKey, WhoAmI

app = typer.Typer(help="API keys of your project (admin scope), and the first one of a project",
                  no_args_is_help=True)


class Scope(StrEnum):
    """The API's scopes (shared/apikeys.py; tests/unit/test_client_types.py keeps the two equal)."""

    RUNS_READ = "runs:read"
    RUNS_WRITE = "runs:write"
    DATASETS_READ = "datasets:read"
    DATASETS_WRITE = "datasets:write"
    MODELS_READ = "models:read"
    MODELS_PUBLISH = "models:publish"
    TRAINERS_READ = "trainers:read"
    ADMIN = "admin"


def _table(keys: list[ApiKey]) -> None:
    made = common.table("id", "name", "scopes", "created", "revoked")
    for key in keys:
        made.add_row(key["id"], key["name"], " ".join(key["scopes"]), when(key["created_at"]),
                     when(key["revoked_at"]) if key["revoked_at"] else "")
    show_table(made)


def show_created(created: CreatedApiKey) -> None:
    _table([created])
    console.print(f"key (shown only now): {created['key']}", highlight=False, markup=False)


@api_command(app, "create", show_created)
def create(client: TrainyardClient, name: str,
           scope: Annotated[list[Scope], typer.Option("--scope", help="a scope to grant (repeatable)")],
           ) -> CreatedApiKey:
    """A new key in your project (needs admin); the key is printed once, only its hash is kept."""
    return client.keys.create(name, [str(s) for s in scope])


@api_command(app, "list", _table)
def list_keys(client: TrainyardClient) -> list[ApiKey]:
    """Your project's keys, revoked ones too (needs admin)."""
    return client.keys.list()


@api_command(app, "revoke", lambda key: console.print(f"revoked {key['id']} ({key['name']})", highlight=False,
                                                      markup=False))
def revoke(client: TrainyardClient,
           key: Annotated[str, typer.Argument(help="the key's id, or an unambiguous start of it")]) -> ApiKey:
    """Revoke a key of your project at once (needs admin)."""
    return client.keys.revoke(common.key_id(client, key))


@api_command(app, "me", lambda me: console.print(f"key {me['key_id']}, project {me['project']}, "
                                                 f"scopes {' '.join(me['scopes'])}", highlight=False))
def me(client: TrainyardClient) -> WhoAmI:
    """The key in use: its id, project and scopes."""
    return client.keys.me()

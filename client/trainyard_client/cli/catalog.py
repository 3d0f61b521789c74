"""`trainyard trainers` and `trainyard architectures`: what can train, and what it can train."""

import typer

from trainyard_client import TrainyardClient
from trainyard_client.cli import common
from trainyard_client.cli.common import api_command, show_table, when
from trainyard_client.types import Architecture, Trainer

# Top-level commands (`trainyard trainers`), gathered here and added to the main app.
commands = typer.Typer()


def show_trainers(trainers: list[Trainer]) -> None:
    made = common.table("id", "health", "accelerators", "free", "runs", "last seen")
    for t in trainers:
        accelerators = ", ".join(f"{a.get('name', '?')} x{a.get('count', 1)}" for a in t["accelerators"])
        made.add_row(t["id"], t["health"] + (" (draining)" if t["draining"] else ""), accelerators,
                     f"{t['free']}/{t['capacity']}", " ".join(r["run_id"][:common.SHORT_ID] for r in t["runs"]),
                     when(t["last_seen"])[11:])
    show_table(made)


@api_command(commands, "trainers", show_trainers)
def list_trainers(client: TrainyardClient) -> list[Trainer]:
    """Every trainer the stack has heard from: online, silent or lost."""
    return client.trainers.list()


def show_architectures(architectures: list[Architecture]) -> None:
    made = common.table("id", "family", "backbone", "stages", "optimizer", "description")
    for a in architectures:
        made.add_row(a["id"], a["family"], a["backbone"], str(a["backbone_stages"]), a["optimizer"],
                     a["description"])
    show_table(made)


@api_command(commands, "architectures", show_architectures)
def list_architectures(client: TrainyardClient) -> list[Architecture]:
    """Architectures with their backbone, stages --frozen-stages may freeze, and stock optimizer."""
    return client.architectures.list()

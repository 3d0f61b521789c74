"""`trainyard sweeps`: start a hyperparameter sweep from a file, follow its trials, kill it."""

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from trainyard_client import TrainyardClient
from trainyard_client.cli import common
from trainyard_client.cli.common import ServerTable, api_command, console, show_table
from trainyard_client.cli.spec import read_spec_file
from trainyard_client.sweep_types import Sweep

app = typer.Typer(help="hyperparameter sweeps: trials are runs; ASHA stops the poor ones early", no_args_is_help=True)
POLL_S = 2.0


def trials_table(sweep: Sweep) -> ServerTable:
    best = sweep["best"]["run_id"] if sweep["best"] else None
    made = common.table("trial", "status", "params", "epochs", f"best {sweep['metric']}", "stopped",
                        title=f"sweep {sweep['id'][:common.SHORT_ID]} {sweep['name']}: {sweep['status']}")
    for trial in sweep["trials"]:
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial["parameters"].items())
        value = "-" if trial["best_value"] is None else f"{trial['best_value']:.4f}"
        stopped = trial["stopped"]
        made.add_row(trial["run_id"][:common.SHORT_ID] + (" *" if trial["run_id"] == best else ""),
                     trial["status"], params, str(trial["epochs_completed"]), value,
                     f"rung {stopped['rung'] + 1}" if stopped else "")
    return made


def show_sweep(sweep: Sweep) -> None:
    show_table(trials_table(sweep))
    if sweep["best"]:
        console.print(f"best: trial {sweep['best']['run_id']} {sweep['metric']} {sweep['best']['value']:.4f} "
                      f"at epoch {sweep['best']['epoch']} (* in the table)", highlight=False)


def show_sweeps(sweeps: list[Sweep]) -> None:
    made = common.table("id", "name", "status", "trials", "best")
    for sweep in sweeps:
        best = "-" if not sweep["best"] else f"{sweep['metric']} {sweep['best']['value']:.4f}"
        made.add_row(sweep["id"][:common.SHORT_ID], sweep["name"], sweep["status"], str(len(sweep["trials"])), best)
    show_table(made)


def follow(client: TrainyardClient, sweep: Sweep) -> Sweep:
    """A live table of the trials until the sweep ends."""
    with Live(trials_table(sweep), console=console, refresh_per_second=2) as live:
        while sweep["status"] == "running":
            time.sleep(POLL_S)
            sweep = client.sweeps.get(sweep["id"])
            live.update(trials_table(sweep))
    return sweep


@api_command(app, "start", show_sweep)
def start(client: TrainyardClient,
          file: Annotated[Path, typer.Option("--file", "-f", help="the sweep spec, YAML or JSON (POST /v1/sweeps)")],
          follow_it: Annotated[bool, typer.Option("--follow", help="show the trials live until it ends")] = False,
          ) -> Sweep:
    """Start a sweep: its trials are queued at once; at most max_concurrent train together."""
    sweep = client.sweeps.start(read_spec_file(file))
    return follow(client, sweep) if follow_it else sweep


@api_command(app, "get", show_sweep)
def get(client: TrainyardClient, sweep: Annotated[str, typer.Argument(help="the sweep's id")]) -> Sweep:
    """A sweep's trials with their parameters, status, best metric and where ASHA stopped them."""
    return client.sweeps.get(sweep)


@api_command(app, "list", show_sweeps)
def list_sweeps(client: TrainyardClient) -> list[Sweep]:
    """The project's sweeps, newest first."""
    return client.sweeps.list()


@api_command(app, "kill", show_sweep)
def kill(client: TrainyardClient, sweep: Annotated[str, typer.Argument(help="the sweep's id")]) -> Sweep:
    """Stop a sweep: trials still queued or training end `terminated`; finished ones are kept."""
    return client.sweeps.kill(sweep)

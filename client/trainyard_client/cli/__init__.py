"""The `trainyard` command: datasets, runs, models, trainers, architectures and API keys over
the HTTP API; with the platform installed beside it, also the local stack (up, down, demo),
a trainer joining a stack, and a project's first key (`keys bootstrap`).

Every command that talks to the API takes `--api-url`, `--api-key` and `--data-dir`
(defaults: TRAINYARD_API_URL / TRAINYARD_API_KEY, else the stack recorded under
TRAINYARD_DATA_DIR or .trainyard) and prints tables for people or, with `--json`, JSON.
One module per command group; what they share is in `common`.
"""

import importlib.util

import typer

from trainyard_client.cli import catalog, datasets, keys, models, runs, sweeps

app = typer.Typer(help="trainyard: managed MMDetection training runs", no_args_is_help=True)
app.add_typer(datasets.app, name="datasets")
app.add_typer(datasets.app, name="dataset", hidden=True)
app.add_typer(runs.app, name="runs")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(sweeps.app, name="sweeps")
app.registered_commands += catalog.commands.registered_commands

# The platform (repository root distribution) adds the commands that run servers or
# write MongoDB themselves; the client alone has no such dependency.
if importlib.util.find_spec("trainyard") is not None and importlib.util.find_spec("trainyard.commands") is not None:
    from trainyard.commands import register

    register(app, datasets=datasets.app, keys=keys.app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

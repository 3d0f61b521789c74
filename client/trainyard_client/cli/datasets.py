"""`trainyard datasets ...`: send, register and inspect COCO datasets (`synth` comes with the platform)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from trainyard_client import TrainyardClient
from trainyard_client.cli import common
from trainyard_client.cli.common import CliError, api_command, console, short, show_table, when
from trainyard_client.packing import PackingError
from trainyard_client.types import Dataset, DatasetPage

app = typer.Typer(help="Datasets: generate, register, inspect", no_args_is_help=True)
DatasetId = Annotated[str, typer.Argument(help="the dataset's id, or an unambiguous start of it")]


def _table(datasets: list[Dataset], wide: bool = False) -> None:
    made = common.table("id", "name", "classes", "train", "val", "created")
    for d in datasets:
        made.add_row(short(d["id"], wide), d["name"], ", ".join(d["classes"]), str(d["train"]["image_count"]),
                     str(d["val"]["image_count"]), when(d["created_at"]))
    show_table(made, wide)


def show_page(page: DatasetPage) -> None:
    _table(page["items"])
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}", highlight=False, markup=False)


def show_dataset(dataset: Dataset) -> None:
    _table([dataset], wide=True)
    made = common.table("split", *dataset["classes"], title="boxes per class")
    for split in ("train", "val"):
        counts = dataset[split]["boxes_per_class"]
        made.add_row(split, *(str(counts.get(c, 0)) for c in dataset["classes"]))
    show_table(made)


@api_command(app, "register", lambda dataset: _table([dataset], wide=True))
def register(client: TrainyardClient, name: str, path: Path) -> Dataset:
    """Validate and register a COCO dataset (annotations/{train,val}.json, images/{train,val}/)."""
    return client.datasets.register(name, str(path.resolve()))


@api_command(app, "push", lambda dataset: _table([dataset], wide=True))
def push(client: TrainyardClient, name: str,
         source: Annotated[Path, typer.Argument(help="a dataset directory (annotations/{train,val}.json, "
                                                      "images/{train,val}/), or a .tar, .tar.gz, .tgz or .zip")],
         ) -> Dataset:
    """Send a dataset to the server (no shared file system needed): a directory is packed as a tar
    while it is sent; the server validates it, then every trainer can train on it."""
    # On stderr: `--json` keeps stdout for the answer alone.
    columns = (TextColumn("sending {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        bar = progress.add_task(common.shown(source.name), total=None)

        def sent(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        try:
            return client.datasets.upload(name, source, progress=sent)
        except PackingError as error:
            raise CliError(str(error)) from error


@api_command(app, "list", show_page)
def list_datasets(client: TrainyardClient, limit: int = 50, cursor: str | None = None) -> DatasetPage:
    """Your project's datasets, newest first."""
    return client.datasets.list(limit, cursor)


@api_command(app, "get", show_dataset)
def get(client: TrainyardClient, dataset: DatasetId) -> Dataset:
    """One dataset with its image and box counts per class."""
    return client.datasets.get(common.dataset_id(client, dataset))

"""`trainyard models ...`: the registry of trained models."""

from pathlib import Path
from typing import Annotated

import typer

from trainyard_client import TrainyardClient
from trainyard_client.cli import common
from trainyard_client.cli.common import Wide, api_command, console, short, show_table, when
from trainyard_client.types import Model, ModelPage

app = typer.Typer(help="Trained models: list, inspect, publish, download", no_args_is_help=True)
ModelId = Annotated[str, typer.Argument(help="the model's id, or an unambiguous start of it")]


def _table(models: list[Model], wide: bool = False) -> None:
    made = common.table("id", "architecture", "run", "mAP", "published", "created")
    for m in models:
        made.add_row(short(m["id"], wide), m["architecture"], short(m["run"]["id"], wide),
                     common.metric(m["best_metrics"], "bbox_mAP"), "yes" if m["published"] else "",
                     when(m["created_at"]))
    show_table(made, wide)


def show_model(model: Model) -> None:
    _table([model], wide=True)
    console.print(f"classes: {', '.join(model['classes'])}; weights: {model['checkpoint']}; "
                  f"fine-tuned from: {model['base_model_id'] or '-'}", highlight=False, markup=False)


@app.command("list")
def list_models(published: Annotated[bool | None, typer.Option(help="only published (or unpublished) ones")]
                = None, limit: int = 100, wide: Wide = False, api_url: common.ApiUrl = None,
                api_key: common.ApiKey = None, data_dir: common.DataDir = Path(".trainyard"),
                as_json: common.AsJson = False) -> None:
    """Trained models of your project."""
    with common.reported_errors(), TrainyardClient(api_url, api_key, data_dir=data_dir) as client:
        page: ModelPage = client.models.list(published, limit)
    if as_json:
        common.print_json(page)
    else:
        _table(page["items"], wide)


@api_command(app, "get", show_model)
def get(client: TrainyardClient, model: ModelId) -> Model:
    """One model: its run, metrics and weights."""
    return client.models.get(common.model_id(client, model))


@api_command(app, "publish", show_model)
def publish(client: TrainyardClient, model: ModelId) -> Model:
    """Publish a model (needs models:publish)."""
    return client.models.publish(common.model_id(client, model))


@api_command(app, "unpublish", show_model)
def unpublish(client: TrainyardClient, model: ModelId) -> Model:
    """Withdraw a published model (needs models:publish)."""
    return client.models.unpublish(common.model_id(client, model))


@api_command(app, "download", lambda path: console.print(f"{path} ({Path(path).stat().st_size / 1e6:.1f} MB)",
                                                         highlight=False))
def download(client: TrainyardClient, model: ModelId,
             out: Annotated[Path | None, typer.Option("--out", "-o", help="file to write [default: "
                                                                          "./<model id>.pth]")] = None) -> str:
    """Download a model's trained weights (a PyTorch state_dict file)."""
    full = common.model_id(client, model)
    return str(client.models.download_weights(full, out or Path(f"{full}.pth")))

"""`trainyard runs ...`: start, list, inspect, follow, read results, stop, remove."""

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from trainyard_client import TrainyardClient
from trainyard_client.cli import common
from trainyard_client.cli.common import Wide, api_command, console, metric, short, show_table, when
from trainyard_client.cli.follow import follow_run
from trainyard_client.cli.spec import merged_spec, read_spec_file
from trainyard_client.types import (
    BestEpoch,
    ConfusionMatrix,
    EpochLog,
    IterationLog,
    LogEntry,
    MetricSeries,
    Run,
    RunCheckpoints,
    RunConfig,
    RunPage,
    RunPreviews,
)

app = typer.Typer(help="Training runs: start, watch, read results, stop, remove", no_args_is_help=True)
RunId = Annotated[str, typer.Argument(help="the run's id, or an unambiguous start of it")]
# Series per table in `runs metrics`: with the epoch column that is what 80 columns hold.
SERIES_PER_TABLE = 5


def _runs_table(page: RunPage, wide: bool) -> None:
    made = common.table("id", "name", "status", "epochs", "best mAP", "created")
    for run in page["items"]:
        progress = run["progress"]
        top = run.get("best")
        made.add_row(short(run["id"], wide), run["name"], run["status"],
                     f"{progress['epoch']}/{progress['total_epochs']}",
                     f"{top['value']:.3f} (epoch {top['epoch']})" if top else "-", when(run["created_at"]))
    show_table(made, wide)
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}", highlight=False, markup=False)


def show_run(run: Run) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    progress, spec = run["progress"], run["spec"]
    rows = [
        ("id", run["id"]), ("name", run["name"]), ("status", run["status"]), ("overview", run["overview"]),
        ("architecture", spec["architecture"]), ("dataset", spec["dataset_id"]),
        ("base model", spec.get("base_model_id") or "-"),
        ("accelerator", f"{spec['accelerator']['name']} x{spec['accelerator']['count']}"),
        ("progress", f"{progress['epoch']}/{progress['total_epochs']} epochs ({progress['percent']:g}%)"),
        ("trainer", run["trainer_id"] or "-"), ("device", run["device"] or "-"), ("attempts", str(run["attempt"])),
        ("duration", common.duration(run["duration_s"])), ("created", when(run["created_at"])),
        ("updated", when(run["updated_at"])),
        ("metrics", "  ".join(f"{k} {metric(run['latest_metrics'], k)}" for k in sorted(run["latest_metrics"]))
         or "-"),
        ("best", f"{top['metric']} {top['value']:.3f} at epoch {top['epoch']}" if (top := run.get("best"))
         else "-"),
    ]
    for name, value in rows:
        grid.add_row(name, common.shown(value))
    console.print(grid, highlight=False, width=common.WIDTH)
    history = common.table("at", "status", "attempt", "message", title="history")
    for change in run["history"]:
        history.add_row(when(change["at"]), change["status"], str(change.get("attempt") or ""),
                        change.get("message") or "")
    show_table(history)


def show_change(run: Run) -> None:
    console.print(common.shown(f"{run['id']} {run['status']}: {run['overview']}"), highlight=False)


@app.command("start")
def start(
    name: Annotated[str | None, typer.Argument(help="the run's name [default: the spec file's]")] = None,
    spec_file: Annotated[Path | None, typer.Option("--file", "-f", help="a RunSpec as YAML or JSON; flags "
                                                                         "override its fields")] = None,
    dataset: Annotated[str | None, typer.Option(help="the dataset's id (or a start of it)")] = None,
    architecture: Annotated[str | None, typer.Option(help="an id from `trainyard architectures`")] = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    input_size: int | None = None,
    learning_rate: float | None = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adamw [default: the architecture's]")] = None,
    seed: int | None = None,
    accelerator: Annotated[str | None, typer.Option(help="accelerator name, e.g. CPU or GPU_H100")] = None,
    accelerator_count: int | None = None,
    base_model: Annotated[str | None, typer.Option(help="a registry model to start from (its id or a start)")]
    = None,
    frozen_stages: Annotated[int | None, typer.Option(help="backbone stages kept frozen")] = None,
    priority: Annotated[int | None, typer.Option(help="-100..100, higher is placed first")] = None,
    checkpoint_strategy: Annotated[str | None, typer.Option(help="latest, best or lowest_val_loss")] = None,
    checkpoint_metric: Annotated[str | None, typer.Option(help="the metric `best` keeps")] = None,
    checkpoint_interval: Annotated[int | None, typer.Option(help="save a checkpoint every N epochs")] = None,
    attempts: Annotated[int | None, typer.Option(help="attempts before the run ends aborted")] = None,
    timeout: Annotated[int | None, typer.Option(help="an attempt's time limit, in seconds")] = None,
    limit_metric: Annotated[str | None, typer.Option(help="stop once this metric reaches --limit-value")] = None,
    limit_value: float | None = None,
    patience: Annotated[int | None, typer.Option(help="stop after this many evaluations without improving")]
    = None,
    evaluation_interval: Annotated[int | None, typer.Option(help="evaluate every N epochs")] = None,
    matrix: Annotated[bool | None, typer.Option(help="compute a confusion matrix at each evaluation")] = None,
    preview: Annotated[bool | None, typer.Option(help="render evaluation previews (`runs previews`)")] = None,
    preview_images: Annotated[int | None, typer.Option(help="validation images a preview shows (1-16)")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="then follow it live until it ends")] = False,
    api_url: common.ApiUrl = None, api_key: common.ApiKey = None, data_dir: common.DataDir = Path(".trainyard"),
    as_json: common.AsJson = False,
) -> None:
    """Start a training run from flags, a spec file (-f spec.yaml), or both."""
    with common.reported_errors(), TrainyardClient(api_url, api_key, data_dir=data_dir) as client:
        from_file = read_spec_file(spec_file) if spec_file else {}
        limit = {"metric": limit_metric, "value": limit_value} if limit_value is not None else None
        spec = merged_spec(from_file, {
            "name": name, "dataset_id": common.dataset_id(client, dataset) if dataset else None,
            "architecture": architecture, "epochs": epochs, "batch_size": batch_size, "input_size": input_size,
            "learning_rate": learning_rate, "optimizer": optimizer, "seed": seed,
            "accelerator": {"name": accelerator, "count": accelerator_count},
            "base_model_id": common.model_id(client, base_model) if base_model else None,
            "num_frozen_stages": frozen_stages, "priority": priority, "max_attempts": attempts,
            "execution_timeout_s": timeout, "checkpoint": {"strategy": checkpoint_strategy,
                                                           "metric": checkpoint_metric,
                                                           "interval": checkpoint_interval},
            "limit": limit, "patience": patience, "evaluation_interval": evaluation_interval,
            "matrix": matrix, "preview": preview, "preview_images": preview_images,
        })
        for needed in ("name", "dataset_id"):
            if needed not in spec:
                raise common.CliError(f"a run needs {needed}: give it as a flag or in the spec file")
        spec.setdefault("architecture", "rtmdet-tiny")
        run = client.runs.start(spec)
        if as_json:
            common.print_json(run)
        else:
            console.print(common.shown(f"run {run['id']} {run['status']}: {run['overview']}"), highlight=False)
        if follow:
            final = follow_run(client, run["id"], as_json=as_json)
            raise typer.Exit(0 if final["status"] == "success" else 1)


@app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="only runs in this status")] = None,
    search: Annotated[str | None, typer.Option(help="part of the name, or the start of the id")] = None,
    sort: Annotated[str, typer.Option(help="-created_at, created_at, status or -status")] = "-created_at",
    limit: int = 50,
    cursor: Annotated[str | None, typer.Option(help="next page: the cursor a previous listing printed")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="every page")] = False,
    wide: Wide = False,
    api_url: common.ApiUrl = None, api_key: common.ApiKey = None, data_dir: common.DataDir = Path(".trainyard"),
    as_json: common.AsJson = False,
) -> None:
    """Your project's runs, newest first unless sorted otherwise (ids: their first 8 digits, --wide whole)."""
    with common.reported_errors(), TrainyardClient(api_url, api_key, data_dir=data_dir) as client:
        if all_pages:
            page: RunPage = {"items": list(client.runs.list_all(status, search, sort, page_size=limit)),
                             "next_cursor": None}
        else:
            page = client.runs.list(status, search, sort, limit, cursor)
    if as_json:
        common.print_json(page)
    else:
        _runs_table(page, wide)


@api_command(app, "get", show_run)
def get(client: TrainyardClient, run: RunId) -> Run:
    """A run's status overview, progress, duration, trainer, attempts, metrics and history."""
    return client.runs.get(common.run_id(client, run))


@api_command(app, "kill", show_change)
def kill(client: TrainyardClient, run: RunId) -> Run:
    """Stop a run; it ends `terminated`."""
    return client.runs.kill(common.run_id(client, run))


@api_command(app, "rerun", show_change)
def rerun(client: TrainyardClient, run: RunId) -> Run:
    """Run again a run that failed, was aborted or killed; it resumes from its latest checkpoint."""
    return client.runs.rerun(common.run_id(client, run))


@api_command(app, "remove", lambda removed: console.print(f"removed run {removed}", highlight=False))
def remove(client: TrainyardClient, run: RunId,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False) -> str:
    """Delete a finished run with its logs, metrics, confusion matrices, previews and checkpoints.

    A run still active must be killed first. A model the run produced stays in the registry.
    """
    full = common.run_id(client, run)
    if not yes:
        typer.confirm(f"Remove run {full} and everything stored for it?", abort=True)
    client.runs.remove(full)
    return full


def show_logs(logs: list[LogEntry]) -> None:
    epochs: list[EpochLog] = [e for e in logs if e["kind"] == "epoch"]
    iterations: list[IterationLog] = [e for e in logs if e["kind"] == "iteration"]
    if epochs:
        made = common.table("epoch", "loss", "lr", "mAP", "mAP50", "mAP75", "time", "logged")
        for e in epochs:
            m = e["metrics"]
            made.add_row(f"{e['epoch']}/{e['total_epochs']}", f"{e['loss']:.3f}", f"{e['learning_rate']:.1e}",
                         metric(m, "bbox_mAP"), metric(m, "bbox_mAP_50"), metric(m, "bbox_mAP_75"),
                         f"{e['epoch_time_s']:.1f}s", when(e["logged_at"])[11:])
        show_table(made)
    if iterations:
        made = common.table("step", "epoch", "loss", "lr", "logged", title="iterations")
        for it in iterations:
            made.add_row(str(it["step"]), str(it["epoch"]), f"{it['loss'] or 0:.3f}",
                         f"{it['learning_rate'] or 0:.1e}", when(it["logged_at"])[11:])
        show_table(made)
    if not logs:
        console.print("no logs yet")


@api_command(app, "logs", show_logs)
def logs(client: TrainyardClient, run: RunId,
         kind: Annotated[str, typer.Option(help="all, epoch or iteration")] = "all") -> list[LogEntry]:
    """Epoch logs (loss, learning rate, COCO mAP) and iteration logs, in time order."""
    if kind not in ("all", "epoch", "iteration"):
        raise common.CliError(f"--kind {kind!r}: one of all, epoch, iteration")
    chosen: Literal["all", "epoch", "iteration"] = kind  # type: ignore[assignment]
    entries: list[LogEntry] = []
    entries += client.runs.logs(common.run_id(client, run), chosen)
    return entries


def show_metrics(series: MetricSeries) -> None:
    """Five series a table, so each fits 80 columns."""
    names = list(series["series"])
    for first in range(0, len(names), SERIES_PER_TABLE):
        chunk = names[first:first + SERIES_PER_TABLE]
        made = common.table("epoch", *chunk)
        for i, epoch in enumerate(series["epochs"]):
            made.add_row(str(epoch), *("-" if series["series"][n][i] is None else f"{series['series'][n][i]:.4g}"
                                       for n in chunk))
        show_table(made)


@api_command(app, "metrics", show_metrics)
def metrics(client: TrainyardClient, run: RunId,
            name: Annotated[list[str] | None, typer.Option(help="only these series (repeatable)")] = None,
            ) -> MetricSeries:
    """Per-epoch metric series (what a chart plots)."""
    return client.runs.metrics(common.run_id(client, run), name)


def show_best(best: BestEpoch) -> None:
    console.print(f"best {best['metric']} ({best['mode']}) = {best['value']:.4f} at epoch {best['epoch']['epoch']}",
                  highlight=False)
    from trainyard_client.cli.follow import format_epoch

    console.print(format_epoch(best["epoch"]), highlight=False)


@api_command(app, "best", show_best)
def best(client: TrainyardClient, run: RunId, metric: str = "bbox_mAP",
         mode: Annotated[str | None, typer.Option(help="max or min [default: min for losses, else max]")] = None,
         ) -> BestEpoch:
    """The run's best epoch by a metric."""
    if mode not in (None, "max", "min"):
        raise common.CliError(f"--mode {mode!r}: max or min")
    return client.runs.best_epoch(common.run_id(client, run), metric, mode)  # type: ignore[arg-type]


def show_matrix(cm: Any) -> None:
    if cm.get("format") != "matrix":
        common.print_json(cm)
        return
    made = common.ServerTable(title=f"confusion matrix, epoch {cm['epoch']} (rows: ground truth, columns: predicted; "
                       f"score >= {cm['score_threshold']}, IoU >= {cm['iou_threshold']})")
    made.add_column("")
    for name in cm["classes"]:
        made.add_column(name, justify="right")
    for name, row in zip(cm["classes"], cm["matrix"], strict=True):
        made.add_row(name, *(str(v) for v in row))
    show_table(made)


@api_command(app, "matrix", show_matrix)
def matrix(client: TrainyardClient, run: RunId, epoch: int | None = None,
           datature: Annotated[bool, typer.Option("--datature", help="Datature's per-column JSON")] = False,
           ) -> Any:
    """The confusion matrix of the latest (or a given) evaluation."""
    full = common.run_id(client, run)
    if datature:
        return client.runs.datature_confusion_matrix(full, epoch)
    cm: ConfusionMatrix = client.runs.confusion_matrix(full, epoch)
    return cm


def show_previews(previews: RunPreviews) -> None:
    threshold = previews["score_threshold"]
    made = common.table("epoch", "image id", "file name", "url",
                        title=f"previews (score >= {threshold})" if threshold is not None else "previews")
    for item in previews["items"]:
        for image in item["images"]:
            made.add_row(str(item["epoch"]), str(image["image_id"]), image["file_name"], image["url"])
    show_table(made)
    if "files" in previews:
        console.print(f"{len(previews['files'])} PNG files written", highlight=False)  # type: ignore[typeddict-item]


@api_command(app, "previews", show_previews)
def previews(client: TrainyardClient, run: RunId,
             epoch: Annotated[int | None, typer.Option(help="only this epoch")] = None,
             out: Annotated[Path | None, typer.Option("--out", "-o", help="download the PNGs into this directory, "
                                                                          "as <dir>/epoch_<n>/<image id>.png")]
             = None) -> dict[str, Any]:
    """The run's evaluation previews (started with --preview): list them, or download them with --out."""
    full = common.run_id(client, run)
    listed: dict[str, Any] = dict(client.runs.previews(full, epoch))
    if out is not None:
        listed["files"] = [str(path) for path in client.runs.download_previews(full, out, epoch)]
    return listed


@app.command("predictions")
def predictions(
    run: RunId,
    epoch: Annotated[int | None, typer.Option(help="an evaluated epoch [default: the latest]")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON to this file")] = None,
    api_url: common.ApiUrl = None, api_key: common.ApiKey = None, data_dir: common.DataDir = Path(".trainyard"),
) -> None:
    """An evaluation's predictions in COCO results format, to recompute its metrics with pycocotools."""
    import json

    with common.reported_errors(), TrainyardClient(api_url, api_key, data_dir=data_dir) as client:
        found = client.runs.predictions(common.run_id(client, run), epoch)
    if out is None:
        typer.echo(json.dumps(found))
        return
    out.write_text(json.dumps(found))
    console.print(f"{len(found)} predictions written to {out}", highlight=False)


def show_checkpoints(stored: RunCheckpoints) -> None:
    made = common.table("epoch", "attempt", "size", "best", "stored")
    for item in stored["items"]:
        made.add_row(str(item["epoch"]), str(item["attempt"]), f"{item['size_bytes'] / 1e6:.1f} MB",
                     "yes" if item["best"] else "", when(item["stored_at"]))
    show_table(made)
    if stored["resume_from"]:
        console.print(f"a rerun resumes after epoch {stored['resume_from']['epoch']}", highlight=False)


@api_command(app, "checkpoints", show_checkpoints)
def checkpoints(client: TrainyardClient, run: RunId) -> RunCheckpoints:
    """The run's stored checkpoints: the newest few and the best; a rerun resumes from the newest."""
    return client.runs.checkpoints(common.run_id(client, run))


@api_command(app, "config", lambda config: typer.echo(config["config"]))
def config(client: TrainyardClient, run: RunId) -> RunConfig:
    """The MMEngine config (Python) the run's latest attempt trained with: save it to reproduce the run."""
    return client.runs.config(common.run_id(client, run))


@app.command("follow")
def follow(run: RunId, api_url: common.ApiUrl = None, api_key: common.ApiKey = None,
           data_dir: common.DataDir = Path(".trainyard"),
           as_json: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False) -> None:
    """Watch a run live until it ends; exits 0 when it succeeded, 1 otherwise."""
    with common.reported_errors(), TrainyardClient(api_url, api_key, data_dir=data_dir) as client:
        final = follow_run(client, common.run_id(client, run), as_json=as_json)
    raise typer.Exit(0 if final["status"] == "success" else 1)


def show_comparison(comparison: dict[str, Any]) -> None:
    for run in comparison["runs"]:
        best = ", ".join(f"{name} {b['value']:.3f} (epoch {b['epoch']})"
                         for name, b in run["best_metrics"].items() if b and b.get("value") is not None)
        console.print(common.shown(f"{run['id']}  {run['name']}  {run['status']}  {run['architecture']}  "
                                   f"epochs {run['epochs_done']}  best: {best or '-'}"), highlight=False)
    for difference in comparison["spec_differences"]:
        console.print(common.shown(f"differs  {difference['field']}: "
                                   + " | ".join(map(str, difference["values"]))), highlight=False)


@api_command(app, "compare", show_comparison)
def compare(client: TrainyardClient, runs: Annotated[list[str], typer.Argument(help="2 to 10 run ids or prefixes")],
            ) -> dict[str, Any]:
    """2 to 10 runs side by side: final and best metrics, and the spec fields that differ."""
    return client.runs.compare([common.run_id(client, run) for run in runs])

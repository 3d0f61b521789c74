"""The `trainyard` command: local stack, datasets, runs, models, API keys, and the demo.

Every command that talks to the API takes `--api-url` and `--api-key` (defaults:
TRAINYARD_API_URL / TRAINYARD_API_KEY, else the local stack's URL and admin key)
and prints tables for people or, with `--json`, JSON for scripts.
"""

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.apikeys import PROJECT_PATTERN, Scope
from trainyard.client import Run, TrainyardClient, TrainyardError
from trainyard.localstack import SERVICES, STATE_FILE, LocalStack, StackError, stop_recorded_stack
from trainyard.supervisor import DEATH_WINDOW_S, MAX_DEATHS, Supervisor

app = typer.Typer(help="trainyard: managed MMDetection training runs", no_args_is_help=True)
dataset_app = typer.Typer(help="Datasets: generate, register, inspect", no_args_is_help=True)
runs_app = typer.Typer(help="Training runs: start, watch, read results, stop, remove", no_args_is_help=True)
models_app = typer.Typer(help="Trained models: list, inspect, publish", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of your project (admin scope), and the first one of a project",
                       no_args_is_help=True)
app.add_typer(dataset_app, name="datasets")
app.add_typer(dataset_app, name="dataset", hidden=True)
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
# soft_wrap: a line per epoch even when the output is a pipe or a CI log.
console = Console(soft_wrap=True)

DataDir = Annotated[Path, typer.Option(help="where the local stack keeps all its data", envvar="TRAINYARD_DATA_DIR")]
ApiUrl = Annotated[str | None, typer.Option(help="API base URL [default: TRAINYARD_API_URL or the local stack's]")]
ApiKey = Annotated[str | None, typer.Option(help="API key [default: TRAINYARD_API_KEY or the local stack's]",
                                            show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of tables")]


# C0 controls but newline and tab, DEL, C1 controls, and the invisible marks that reorder or hide
# text (bidirectional overrides and isolates, zero-width characters).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value: object) -> str:
    """Text from the server as it may reach a terminal: every control character escaped (ESC shows
    as \\x1b, NUL as \\x00), and rich markup in it shown, not applied. Every output path of the CLI
    puts server text through here (ServerTable does for tables), never straight to the console."""
    text = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", str(value))
    return escape(text)


class ServerTable(Table):
    """A rich Table whose headers, title and cells are server text, shown through `shown`."""

    def __init__(self, *headers: Any, **options: Any) -> None:
        if isinstance(options.get("title"), str):
            options["title"] = shown(options["title"])
        super().__init__(*(shown(h) if isinstance(h, str) else h for h in headers), **options)

    def add_column(self, header: Any = "", *args: Any, **options: Any) -> None:
        super().add_column(shown(header) if isinstance(header, str) else header, *args, **options)

    def add_row(self, *cells: Any, **options: Any) -> None:
        super().add_row(*(shown(c) if isinstance(c, str) else c for c in cells), **options)
TERMINAL = {"success", "failed", "aborted", "terminated"}


def _client(api_url: str | None, api_key: str | None) -> TrainyardClient:
    return TrainyardClient(api_url, api_key)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """Print the API's problem (status, detail, each bad field) and exit 1 instead of a traceback."""
    try:
        yield
    except TrainyardError as error:
        where = f"error {error.status}" if error.status else "error"
        console.print(f"[red]{where}:[/red] {shown(error.detail)}", highlight=False)
        for item in error.errors[:20]:
            console.print("  - " + shown(", ".join(f"{k}={v}" for k, v in item.items())), highlight=False)
        raise typer.Exit(1) from error


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _metric(values: dict[str, float | None], name: str) -> str:
    """A metric for a table: "-" when not reported or undefined (null) in that evaluation."""
    value = values.get(name)
    return f"{value:.3f}" if value is not None else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- local stack ------------------------------------------------------------------------


@app.command()
def up(
    data_dir: DataDir = Path(".trainyard"),
    api_port: int = 8000,
    max_deaths: Annotated[int, typer.Option(help="give up on a process that dies this many times within the window",
                                            min=1)] = MAX_DEATHS,
    death_window_s: Annotated[float, typer.Option(help="the window of --max-deaths, in seconds", min=1)]
    = DEATH_WINDOW_S,
) -> None:
    """Start NATS, the MongoDB-wire server and the four services, and keep them running: a process
    that dies is restarted in place. Ctrl-C or `trainyard down` stops them."""
    stack = LocalStack(
        data_dir.resolve(),
        nats_url=os.environ.get("TRAINYARD_NATS_URL"),
        mongo_url=os.environ.get("TRAINYARD_MONGO_URL"),
        api_port=api_port,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def report(line: str) -> None:
        console.print(f"{datetime.now(UTC):%H:%M:%S} {line}", highlight=False)

    supervisor = Supervisor(stack, report=report, max_deaths=max_deaths, window_s=death_window_s)
    try:
        stack.start(SERVICES)
        console.print(f"NATS      {stack.nats_url}\nMongoDB   {stack.mongo_url}\nAPI       {stack.api_url}"
                      f"\nAPI key   {stack.api_key_file} (admin of project 'default')"
                      f"\nconsole   {stack.signin_link()} (one-time sign-in link; `trainyard ui` for another)"
                      f"\nlogs      {stack.log_dir}\nstop with Ctrl-C or `trainyard down`")
        # Until Ctrl-C or `trainyard down`: a dead process is restarted, not a reason to stop the rest.
        while True:
            supervisor.check()
            time.sleep(0.5)
    except StackError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


@app.command()
def down(data_dir: DataDir = Path(".trainyard")) -> None:
    """Stop the stack that `trainyard up` started."""
    stopped = stop_recorded_stack(data_dir)
    console.print("stopped " + ", ".join(stopped) if stopped else "no local stack is running")


@app.command()
def ui(data_dir: DataDir = Path(".trainyard"),
       open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open it in the browser")] = True) -> None:
    """Open the web console of the running local stack, signed in by a one-time link (10 minutes, once)."""
    import webbrowser
    from urllib.parse import urlparse

    state_path = data_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if not state.get("api_url"):
        console.print("no local stack is running (start one with `trainyard up`)")
        raise typer.Exit(1)
    stack = LocalStack(data_dir.resolve(), nats_url=state["nats_url"], mongo_url=state["mongo_url"],
                       mongo_db=state.get("mongo_db", "trainyard"), api_port=urlparse(state["api_url"]).port)
    link = stack.signin_link()
    console.print(f"console sign-in link (one-time): {link}", highlight=False)
    if open_browser:
        webbrowser.open(link)


# -- datasets -----------------------------------------------------------------------------


@dataset_app.command("synth")
def dataset_synth(
    out: Annotated[Path, typer.Option(help="directory to write the dataset to")],
    train_images: int = 32, val_images: int = 8, size: int = 128, seed: int = 0,
) -> None:
    """Write a COCO dataset of generated coloured shapes (3 classes)."""
    from trainyard.synth import write_synthetic_coco

    files = write_synthetic_coco(out, train_images=train_images, val_images=val_images, size=size, seed=seed)
    console.print(f"wrote {files.root} (classes: {', '.join(files.classes)})")


def _dataset_table(datasets: list[Any]) -> ServerTable:
    table = ServerTable("id", "name", "classes", "train images", "val images", "created")
    for d in datasets:
        table.add_row(d["id"], d["name"], ", ".join(d["classes"]), str(d["train"]["image_count"]),
                      str(d["val"]["image_count"]), _when(d["created_at"]))
    return table


@dataset_app.command("register")
def dataset_register(name: str, path: Path, api_url: ApiUrl = None, api_key: ApiKey = None,
                     as_json: AsJson = False) -> None:
    """Validate and register a COCO dataset (annotations/{train,val}.json, images/{train,val}/)."""
    with _api_errors(), _client(api_url, api_key) as client:
        dataset = client.datasets.register(name, str(path.resolve()))
    if as_json:
        _print_json(dataset)
    else:
        console.print(_dataset_table([dataset]))


@dataset_app.command("list")
def dataset_list(limit: int = 50, cursor: str | None = None, api_url: ApiUrl = None, api_key: ApiKey = None,
                 as_json: AsJson = False) -> None:
    """Your project's datasets, newest first."""
    with _api_errors(), _client(api_url, api_key) as client:
        page = client.datasets.list(limit, cursor)
    if as_json:
        _print_json(page)
        return
    console.print(_dataset_table(page["items"]))
    if page["next_cursor"]:
        console.print(f"[dim]more: --cursor {page['next_cursor']}[/dim]", highlight=False)


@dataset_app.command("get")
def dataset_get(dataset_id: str, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """One dataset with its image and box counts per class."""
    with _api_errors(), _client(api_url, api_key) as client:
        dataset = client.datasets.get(dataset_id)
    if as_json:
        _print_json(dataset)
        return
    console.print(_dataset_table([dataset]))
    table = ServerTable("split", *dataset["classes"], title="boxes per class")
    for split in ("train", "val"):
        counts = dataset[split]["boxes_per_class"]
        table.add_row(split, *(str(counts.get(c, 0)) for c in dataset["classes"]))
    console.print(table)


# -- runs -------------------------------------------------------------------------------


def _runs_table(runs: list[Run]) -> ServerTable:
    table = ServerTable("id", "name", "status", "progress", "mAP", "mAP50", "created")
    for run in runs:
        progress = run["progress"]
        table.add_row(run["id"], run["name"], run["status"],
                      f"{progress['epoch']}/{progress['total_epochs']} ({progress['percent']:g}%)",
                      _metric(run["latest_metrics"], "bbox_mAP"), _metric(run["latest_metrics"], "bbox_mAP_50"),
                      _when(run["created_at"]))
    return table


def _print_run(run: Run) -> None:
    table = ServerTable.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    progress = run["progress"]
    rows = [
        ("id", run["id"]), ("name", run["name"]), ("status", run["status"]), ("overview", run["overview"]),
        ("architecture", run["spec"]["architecture"]), ("dataset", run["spec"]["dataset_id"]),
        ("accelerator", f"{run['spec']['accelerator']['name']} x{run['spec']['accelerator']['count']}"),
        ("progress", f"{progress['epoch']}/{progress['total_epochs']} epochs ({progress['percent']:g}%)"),
        ("trainer", run["trainer_id"] or "-"), ("device", run["device"] or "-"), ("attempts", str(run["attempt"])),
        ("duration", _duration(run["duration_s"])), ("created", _when(run["created_at"])),
        ("updated", _when(run["updated_at"])),
        ("metrics", "  ".join(f"{k} {v:.3f}" for k, v in sorted(run["latest_metrics"].items())) or "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table, highlight=False)
    history = ServerTable("at", "status", "attempt", "message", title="history")
    for change in run["history"]:
        history.add_row(_when(change["at"]), change["status"], str(change.get("attempt") or ""),
                        change.get("message") or "")
    console.print(history, highlight=False)


@runs_app.command("start")
def runs_start(
    name: str,
    dataset_id: Annotated[str, typer.Option("--dataset", help="the dataset's id")],
    architecture: str = "rtmdet-tiny",
    epochs: int = 12,
    batch_size: int = 4,
    input_size: int = 128,
    learning_rate: float | None = None,
    seed: int = 0,
    accelerator: str = "CPU",
    accelerator_count: int = 1,
    matrix: Annotated[bool, typer.Option(help="compute a confusion matrix at each evaluation")] = True,
    preview: Annotated[bool, typer.Option("--preview", help="render evaluation previews (see `runs previews`)")]
    = False,
    preview_images: Annotated[int, typer.Option(help="validation images a preview shows (1-16)")] = 4,
    follow: Annotated[bool, typer.Option("--follow", help="then follow it live until it ends")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Start a training run."""
    spec: dict[str, Any] = {
        "name": name, "dataset_id": dataset_id, "architecture": architecture, "epochs": epochs,
        "batch_size": batch_size, "input_size": input_size, "seed": seed,
        "accelerator": {"name": accelerator, "count": accelerator_count}, "matrix": matrix, "preview": preview,
        "preview_images": preview_images,
    }
    if learning_rate is not None:
        spec["learning_rate"] = learning_rate
    with _api_errors(), _client(api_url, api_key) as client:
        run = client.runs.start(spec)
        if as_json:
            _print_json(run)
        else:
            console.print(f"run [bold]{run['id']}[/bold] {run['status']}: {shown(run['overview'])}", highlight=False)
        if follow:
            final = follow_run(client, run["id"], as_json=as_json)
            raise typer.Exit(0 if final["status"] == "success" else 1)


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="only runs in this status")] = None,
    search: Annotated[str | None, typer.Option(help="part of the name, or the start of the id")] = None,
    sort: Annotated[str, typer.Option(help="-created_at, created_at, status or -status")] = "-created_at",
    limit: int = 50,
    cursor: Annotated[str | None, typer.Option(help="next page: the cursor a previous listing printed")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="every page")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Your project's runs, newest first unless sorted otherwise."""
    with _api_errors(), _client(api_url, api_key) as client:
        if all_pages:
            runs = list(client.runs.list_all(status, search, sort, page_size=limit))
            next_cursor = None
        else:
            page = client.runs.list(status, search, sort, limit, cursor)
            runs, next_cursor = page["items"], page["next_cursor"]
    if as_json:
        _print_json({"items": runs, "next_cursor": next_cursor})
        return
    console.print(_runs_table(runs), highlight=False)
    if next_cursor:
        console.print(f"[dim]more: --cursor {next_cursor}[/dim]", highlight=False)


@runs_app.command("get")
def runs_get(run_id: str, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """A run's status overview, progress, duration, trainer, attempts, metrics and history."""
    with _api_errors(), _client(api_url, api_key) as client:
        run = client.runs.get(run_id)
    if as_json:
        _print_json(run)
    else:
        _print_run(run)


def _print_run_change(run: Run, as_json: bool) -> None:
    if as_json:
        _print_json(run)
    else:
        console.print(f"{run['id']} {run['status']}: {shown(run['overview'])}", highlight=False)


@runs_app.command("compare")
def runs_compare(run_ids: list[str], api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """2 to 10 runs side by side: final and best metrics, and the spec fields that differ."""
    with _api_errors(), _client(api_url, api_key) as client:
        comparison = client.runs.compare(run_ids)
    if as_json:
        _print_json(comparison)
        return
    for run in comparison["runs"]:
        best = ", ".join(f"{name} {b['value']:.3f} (epoch {b['epoch']})" for name, b in run["best_metrics"].items())
        console.print(f"{run['id']}  {run['name']}  {run['status']}  {run['architecture']}  "
                      f"epochs {run['epochs_done']}  best: {best or '-'}", highlight=False)
    for difference in comparison["spec_differences"]:
        console.print(f"differs  {difference['field']}: " + " | ".join(map(str, difference["values"])),
                      highlight=False)


@runs_app.command("kill")
def runs_kill(run_id: str, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Stop a run; it ends `terminated`."""
    with _api_errors(), _client(api_url, api_key) as client:
        run = client.runs.kill(run_id)
    _print_run_change(run, as_json)


@runs_app.command("rerun")
def runs_rerun(run_id: str, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Run again a run that failed, was aborted or killed; it resumes from its latest checkpoint."""
    with _api_errors(), _client(api_url, api_key) as client:
        run = client.runs.rerun(run_id)
    _print_run_change(run, as_json)


@runs_app.command("remove")
def runs_remove(
    run_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    api_url: ApiUrl = None, api_key: ApiKey = None,
) -> None:
    """Delete a finished run with its logs, metrics, confusion matrices, previews and checkpoints.

    A run still active must be killed first. A model the run produced stays in the registry.
    """
    if not yes:
        typer.confirm(f"Remove run {run_id} and everything stored for it?", abort=True)
    with _api_errors(), _client(api_url, api_key) as client:
        client.runs.remove(run_id)
    console.print(f"removed run {run_id}", highlight=False)


def _logs_table(epochs: list[dict[str, Any]]) -> ServerTable:
    terms = sorted({k for e in epochs for k in e["losses"] if k != "loss"})
    table = ServerTable("epoch", "loss", *terms, "lr", "mAP", "mAP50", "mAP75", "time", "logged")
    for e in epochs:
        m = e["metrics"]
        table.add_row(f"{e['epoch']}/{e['total_epochs']}", f"{e['loss']:.3f}",
                      *(f"{e['losses'][t]:.3f}" if t in e["losses"] else "-" for t in terms),
                      f"{e['learning_rate']:.2e}", _metric(m, "bbox_mAP"), _metric(m, "bbox_mAP_50"),
                      _metric(m, "bbox_mAP_75"), f"{e['epoch_time_s']:.1f}s", _when(e["logged_at"]))
    return table


@runs_app.command("logs")
def runs_logs(
    run_id: str,
    kind: Annotated[str, typer.Option(help="all, epoch or iteration")] = "all",
    api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Epoch logs (losses, learning rate, COCO mAP) and iteration logs, in time order."""
    with _api_errors(), _client(api_url, api_key) as client:
        logs = client.runs.logs(run_id, kind)  # type: ignore[arg-type]
    if as_json:
        _print_json(logs)
        return
    epochs = [e for e in logs if e["kind"] == "epoch"]
    iterations = [e for e in logs if e["kind"] == "iteration"]
    if epochs:
        console.print(_logs_table(epochs), highlight=False)
    if iterations:
        table = ServerTable("epoch", "step", "loss", "lr", "logged", title="iterations")
        for it in iterations:
            table.add_row(str(it["epoch"]), str(it["step"]), f"{it.get('loss') or 0:.3f}",
                          f"{it.get('learning_rate') or 0:.2e}", _when(it["logged_at"]))
        console.print(table, highlight=False)
    if not logs:
        console.print("no logs yet")


def format_epoch(epoch: dict[str, Any]) -> str:
    losses = " ".join(f"{k} {v:.3f}" for k, v in epoch["losses"].items() if k != "loss")
    m = epoch["metrics"]
    return (f"epoch {epoch['epoch']:>3}/{epoch['total_epochs']}  loss {epoch['loss']:.3f} ({losses})  "
            f"lr {epoch['learning_rate']:.2e}  mAP {_metric(m, 'bbox_mAP')} mAP50 {_metric(m, 'bbox_mAP_50')} "
            f"mAP75 {_metric(m, 'bbox_mAP_75')}  {epoch['epoch_time_s']:.1f} s")


def follow_run(client: TrainyardClient, run_id: str, *, as_json: bool = False) -> Run:
    """Show a run live (status lines, a progress bar with the latest losses and mAP) until it ends."""
    if as_json:
        for event in client.runs.follow(run_id):
            typer.echo(json.dumps({"id": event.id, "event": event.event, "data": event.data}))
        return client.runs.get(run_id)
    run = client.runs.get(run_id)
    columns = (TextColumn("[bold]{task.fields[status]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[latest]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("run", total=run["progress"]["total_epochs"], status=run["status"], latest="")
        for event in client.runs.follow(run_id):
            data = event.data
            if event.event == "status":
                message = f" {shown(data['message'])}" if data.get("message") else ""
                progress.console.print(f"{_when(data['at'])}  [bold]{shown(data['status'])}[/bold]{message}",
                                       highlight=False)
                progress.update(bar, status=data["status"])
            elif event.event == "epoch":
                progress.console.print(shown(format_epoch(data)), highlight=False)
                m = data["metrics"]
                terms = " ".join(f"{k} {v:.3f}" for k, v in data["losses"].items() if k != "loss")
                progress.update(bar, completed=data["epoch"], total=data["total_epochs"],
                                latest=f"loss {data['loss']:.3f} ({terms}) mAP {_metric(m, 'bbox_mAP')} "
                                       f"mAP50 {_metric(m, 'bbox_mAP_50')}")
            elif event.event == "end":
                progress.update(bar, status=data["status"])
    final = client.runs.get(run_id)
    colour = "green" if final["status"] == "success" else "red"
    console.print(f"run {run_id} [{colour}]{final['status']}[/{colour}]: {shown(final['overview'])}", highlight=False)
    return final


@runs_app.command("follow")
def runs_follow(run_id: str, api_url: ApiUrl = None, api_key: ApiKey = None,
                as_json: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False) -> None:
    """Watch a run live until it ends; exits 0 when it succeeded, 1 otherwise."""
    with _api_errors(), _client(api_url, api_key) as client:
        final = follow_run(client, run_id, as_json=as_json)
    raise typer.Exit(0 if final["status"] == "success" else 1)


def matrix_table(cm: dict[str, Any]) -> ServerTable:
    table = ServerTable(title=f"confusion matrix, epoch {cm['epoch']} (rows: ground truth, columns: predicted; "
                        f"score >= {cm['score_threshold']}, IoU >= {cm['iou_threshold']})")
    table.add_column("")
    for name in cm["classes"]:
        table.add_column(name, justify="right")
    for name, row in zip(cm["classes"], cm["matrix"], strict=True):
        table.add_row(name, *(str(v) for v in row))
    return table


@runs_app.command("matrix")
def runs_matrix(
    run_id: str,
    epoch: int | None = None,
    datature: Annotated[bool, typer.Option("--datature", help="Datature's per-column JSON")] = False,
    api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """The confusion matrix of the latest (or a given) evaluation."""
    with _api_errors(), _client(api_url, api_key) as client:
        cm = client.runs.confusion_matrix(run_id, epoch, "datature" if datature else "matrix")
    if as_json or datature:
        _print_json(cm)
    else:
        console.print(matrix_table(cm), highlight=False)


@runs_app.command("previews")
def runs_previews(
    run_id: str,
    epoch: Annotated[int | None, typer.Option(help="only this epoch")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="download the PNGs into this directory, as "
                                                                 "<dir>/epoch_<n>/<image id>.png")] = None,
    api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """The run's evaluation previews (started with preview on): list them, or download them with --out."""
    with _api_errors(), _client(api_url, api_key) as client:
        previews = client.runs.previews(run_id, epoch)
        written = client.runs.download_previews(run_id, out, epoch) if out is not None else []
    if as_json:
        _print_json({**previews, "files": [str(path) for path in written]} if out is not None else previews)
        return
    threshold = previews["score_threshold"]
    table = ServerTable("epoch", "image id", "file name", "url",
                  title=f"previews (predictions with score >= {threshold})" if threshold is not None else "previews")
    for item in previews["items"]:
        for image in item["images"]:
            table.add_row(str(item["epoch"]), str(image["image_id"]), image["file_name"], image["url"])
    console.print(table, highlight=False)
    if out is not None:
        console.print(f"{len(written)} PNG files under {out}", highlight=False)


@runs_app.command("predictions")
def runs_predictions(
    run_id: str,
    epoch: Annotated[int | None, typer.Option(help="an evaluated epoch [default: the latest]")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON to this file")] = None,
    api_url: ApiUrl = None, api_key: ApiKey = None,
) -> None:
    """An evaluation's predictions in COCO results format, to recompute its metrics with pycocotools."""
    with _api_errors(), _client(api_url, api_key) as client:
        predictions = client.runs.predictions(run_id, epoch)
    if out is None:
        typer.echo(json.dumps(predictions))
        return
    out.write_text(json.dumps(predictions))
    console.print(f"{len(predictions)} predictions written to {out}", highlight=False)


@runs_app.command("checkpoints")
def runs_checkpoints(run_id: str, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """The run's stored checkpoints: the newest few and the best; a rerun resumes from the newest."""
    with _api_errors(), _client(api_url, api_key) as client:
        stored = client.runs.checkpoints(run_id)
    if as_json:
        _print_json(stored)
        return
    table = ServerTable("epoch", "size", "best", "stored", "name")
    for item in stored["items"]:
        table.add_row(str(item["epoch"]), f"{item['size_bytes'] / 1e6:.1f} MB", "yes" if item["best"] else "",
                      item["stored_at"], item["name"])
    console.print(table, highlight=False)


@runs_app.command("metrics")
def runs_metrics(
    run_id: str,
    name: Annotated[list[str] | None, typer.Option(help="only these series (repeatable)")] = None,
    api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Per-epoch metric series (what a chart plots)."""
    with _api_errors(), _client(api_url, api_key) as client:
        series = client.runs.metrics(run_id, name)
    if as_json:
        _print_json(series)
        return
    table = ServerTable("epoch", *series["series"])
    for i, epoch in enumerate(series["epochs"]):
        table.add_row(str(epoch), *("-" if s[i] is None else f"{s[i]:.4g}" for s in series["series"].values()))
    console.print(table, highlight=False)


@runs_app.command("best")
def runs_best(
    run_id: str,
    metric: str = "bbox_mAP",
    mode: Annotated[str | None, typer.Option(help="max or min [default: min for losses, else max]")] = None,
    api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """The run's best epoch by a metric."""
    with _api_errors(), _client(api_url, api_key) as client:
        best = client.runs.best_epoch(run_id, metric, mode)  # type: ignore[arg-type]
    if as_json:
        _print_json(best)
        return
    console.print(f"best {best['metric']} ({best['mode']}) = {best['value']:.4f} at epoch {best['epoch']['epoch']}",
                  highlight=False)
    console.print(shown(format_epoch(dict(best["epoch"]))), highlight=False)


# -- models (registry: issue 3) -------------------------------------------------------------


def _print_models(value: Any) -> None:
    items = value.get("items") if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        _print_json(value)
        return
    columns = [c for c in ("id", "name", "run_id", "architecture", "published", "created_at")
               if any(c in i for i in items)]
    table = ServerTable(*columns)
    for item in items:
        table.add_row(*(str(item.get(c, "")) for c in columns))
    console.print(table, highlight=False)


@models_app.command("list")
def models_list(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Trained models of your project."""
    with _api_errors(), _client(api_url, api_key) as client:
        models = client.models.list()
    if as_json:
        _print_json(models)
    else:
        _print_models(models)


@models_app.command("get")
def models_get(model_id: str, api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """One model: its run, metrics and artifacts."""
    with _api_errors(), _client(api_url, api_key) as client:
        _print_json(client.models.get(model_id))


@models_app.command("publish")
def models_publish(model_id: str, api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Publish a model (needs models:publish)."""
    with _api_errors(), _client(api_url, api_key) as client:
        _print_json(client.models.publish(model_id))


@models_app.command("unpublish")
def models_unpublish(model_id: str, api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Withdraw a published model (needs models:publish)."""
    with _api_errors(), _client(api_url, api_key) as client:
        _print_json(client.models.unpublish(model_id))


@models_app.command("download")
def models_download(
    model_id: str,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="file to write (default: ./<model id>.pth)")] = None,
    api_url: ApiUrl = None, api_key: ApiKey = None,
) -> None:
    """Download a model's trained weights (a PyTorch state_dict file)."""
    dest = out or Path(f"{model_id}.pth")
    with _api_errors(), _client(api_url, api_key) as client:
        path = client.models.download_weights(model_id, dest)
    console.print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)


# -- API keys -----------------------------------------------------------------------------


def _keys_table(keys: list[Any]) -> ServerTable:
    table = ServerTable("id", "name", "project", "scopes", "created", "revoked")
    for key in keys:
        table.add_row(key["id"], key["name"], key["project"], " ".join(key["scopes"]), _when(key["created_at"]),
                      _when(key["revoked_at"]) if key["revoked_at"] else "")
    return table


ScopeOption = Annotated[list[Scope], typer.Option("--scope", help="a scope to grant (repeatable)")]


@keys_app.command("create")
def keys_create(name: str, scope: ScopeOption, api_url: ApiUrl = None, api_key: ApiKey = None,
                as_json: AsJson = False) -> None:
    """A new key in your project (needs admin); the key is printed once, only its hash is kept."""
    with _api_errors(), _client(api_url, api_key) as client:
        created = client.keys.create(name, [str(s) for s in scope])
    if as_json:
        _print_json(created)
        return
    console.print(_keys_table([created]), highlight=False)
    console.print(f"key (shown only now): [bold]{created['key']}[/bold]", highlight=False)


@keys_app.command("list")
def keys_list(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Your project's keys, revoked ones too (needs admin)."""
    with _api_errors(), _client(api_url, api_key) as client:
        keys = client.keys.list()
    if as_json:
        _print_json(keys)
    else:
        console.print(_keys_table(keys), highlight=False)


@keys_app.command("revoke")
def keys_revoke(key_id: str, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Revoke a key of your project at once (needs admin)."""
    with _api_errors(), _client(api_url, api_key) as client:
        key = client.keys.revoke(key_id)
    if as_json:
        _print_json(key)
    else:
        console.print(f"revoked {key['id']} ({shown(key['name'])})", highlight=False)


@keys_app.command("me")
def keys_me(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """The key in use: its id, project and scopes."""
    with _api_errors(), _client(api_url, api_key) as client:
        me = client.keys.me()
    if as_json:
        _print_json(me)
    else:
        console.print(f"key {me['key_id']}, project {me['project']}, scopes {' '.join(me['scopes'])}",
                      highlight=False)


@keys_app.command("bootstrap")
def keys_bootstrap(
    project: Annotated[str, typer.Option(help="the project the admin key is for")],
    name: str = "bootstrap admin",
    mongo_url: Annotated[str | None, typer.Option(help="[default: TRAINYARD_MONGO_URL]")] = None,
    mongo_db: Annotated[str | None, typer.Option(help="[default: TRAINYARD_MONGO_DB or trainyard]")] = None,
) -> None:
    """Write a project's first admin key straight into MongoDB (for operators with database access)."""
    import re

    from pymongo import MongoClient

    from shared.apikeys import new_key
    from shared.settings import CommonSettings
    from shared.store import API_KEYS

    if not re.match(PROJECT_PATTERN, project):
        console.print(f"[red]project must match {PROJECT_PATTERN}[/red]")
        raise typer.Exit(2)
    settings = CommonSettings()
    key, doc = new_key(project, name, [Scope.ADMIN], created_by="bootstrap", now=datetime.now(UTC))
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url or settings.mongo_url, serverSelectionTimeoutMS=5000)
    with client:
        client[mongo_db or settings.mongo_db][API_KEYS].insert_one(doc)
    console.print(f"admin key {doc['_id']} of project {project} (shown only now):")
    typer.echo(key)


# -- demo -----------------------------------------------------------------------------------


@app.command()
def demo(
    data_dir: DataDir = Path(".trainyard"),
    architecture: str = "rtmdet-tiny",
    epochs: int = 30,
    batch_size: int = 4,
) -> None:
    """Start the local stack, train a detector on generated shapes, show its results, stop."""
    from trainyard.synth import write_synthetic_coco

    data_dir = data_dir.resolve()
    stack = LocalStack(data_dir, nats_url=os.environ.get("TRAINYARD_NATS_URL"),
                       mongo_url=os.environ.get("TRAINYARD_MONGO_URL"))
    try:
        with stack.running(SERVICES):
            console.print(f"stack up: API {stack.api_url}, admin key in {stack.api_key_file}, logs in {stack.log_dir}")
            files = write_synthetic_coco(data_dir / "datasets" / "shapes")
            with TrainyardClient(stack.api_url, stack.admin_key) as client:
                dataset = client.datasets.register("shapes", str(files.root))
                console.print(f"dataset {dataset['id']}: {dataset['train']['image_count']} train / "
                              f"{dataset['val']['image_count']} val images, classes {', '.join(dataset['classes'])}")
                run = client.runs.start(name=f"demo-{architecture}", dataset_id=dataset["id"],
                                        architecture=architecture, epochs=epochs, batch_size=batch_size)
                console.print(f"run {run['id']} created")
                run = follow_run(client, run["id"])
                logs = client.runs.logs(run["id"], "epoch")
                if logs:
                    console.print(matrix_table(client.runs.confusion_matrix(run["id"])))
                    best = client.runs.best_epoch(run["id"])
                    console.print(f"best epoch {best['epoch']['epoch']}: bbox mAP {best['value']:.3f}")
                final = logs[-1]["metrics"] if logs else {}
                console.print(f"run {run['id']} ended [bold]{run['status']}[/bold] after {len(logs)} epochs; "
                              f"final bbox mAP {_metric(final, 'bbox_mAP')}, mAP50 {_metric(final, 'bbox_mAP_50')}")
                if run["status"] != "success":
                    console.print(f"[red]{shown(run.get('message'))}[/red]")
                    raise typer.Exit(1)
    except (StackError, TrainyardError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error


if __name__ == "__main__":
    app()

"""The `trainyard` command: local stack, datasets, runs, and the demo."""

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trainyard.client import TrainyardClient, TrainyardError
from trainyard.localstack import SERVICES, STATE_FILE, LocalStack, StackError, stop_recorded_stack

app = typer.Typer(help="trainyard: managed MMDetection training runs", no_args_is_help=True)
dataset_app = typer.Typer(help="Datasets: generate, register, inspect", no_args_is_help=True)
runs_app = typer.Typer(help="Training runs: start, watch, read results", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
app.add_typer(dataset_app, name="datasets", hidden=True)
app.add_typer(runs_app, name="runs")
# soft_wrap: a line per epoch even when the output is a pipe or a CI log.
console = Console(soft_wrap=True)

DataDir = Annotated[Path, typer.Option(help="where the local stack keeps all its data", envvar="TRAINYARD_DATA_DIR")]
TERMINAL = {"success", "failed", "aborted", "terminated"}


def _api_url(data_dir: Path = Path(".trainyard")) -> str:
    if url := os.environ.get("TRAINYARD_API_URL"):
        return url
    state = data_dir / STATE_FILE
    if state.exists() and (recorded := json.loads(state.read_text()).get("api_url")):
        return str(recorded)
    return "http://127.0.0.1:8000"


ApiUrl = Annotated[str | None, typer.Option(help="API base URL (default: the local stack's)")]


def _client(api_url: str | None) -> TrainyardClient:
    return TrainyardClient(api_url or _api_url())


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def _fail(error: TrainyardError) -> None:
    console.print(f"[red]error {error.status}:[/red] {error.detail}")
    for item in error.errors[:20]:
        console.print("  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
    raise typer.Exit(1)


@app.command()
def up(data_dir: DataDir = Path(".trainyard"), api_port: int = 8000) -> None:
    """Start NATS, the MongoDB-wire server and the four services; Ctrl-C stops them."""
    stack = LocalStack(
        data_dir.resolve(),
        nats_url=os.environ.get("TRAINYARD_NATS_URL"),
        mongo_url=os.environ.get("TRAINYARD_MONGO_URL"),
        api_port=api_port,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        stack.start(SERVICES)
        console.print(f"NATS      {stack.nats_url}\nMongoDB   {stack.mongo_url}\nAPI       {stack.api_url}"
                      f"\nlogs      {stack.log_dir}\nstop with Ctrl-C or `trainyard down`")
        while all(p.poll() is None for p in stack.processes.values()):
            time.sleep(1)
        dead = [name for name, p in stack.processes.items() if p.poll() is not None]
        console.print(f"[red]{', '.join(dead)} exited; see {stack.log_dir}[/red]")
        raise typer.Exit(1)
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


@dataset_app.command("synth")
def dataset_synth(
    out: Annotated[Path, typer.Option(help="directory to write the dataset to")],
    train_images: int = 32, val_images: int = 8, size: int = 128, seed: int = 0,
) -> None:
    """Write a COCO dataset of generated coloured shapes (3 classes)."""
    from trainyard.synth import write_synthetic_coco

    files = write_synthetic_coco(out, train_images=train_images, val_images=val_images, size=size, seed=seed)
    console.print(f"wrote {files.root} (classes: {', '.join(files.classes)})")


@dataset_app.command("register")
def dataset_register(name: str, path: Path, api_url: ApiUrl = None) -> None:
    """Validate and register a COCO dataset (annotations/{train,val}.json, images/{train,val}/)."""
    try:
        _print_json(_client(api_url).datasets.register(name, str(path.resolve())))
    except TrainyardError as error:
        _fail(error)


@runs_app.command("start")
def runs_start(
    name: str,
    dataset_id: Annotated[str, typer.Option("--dataset")],
    architecture: str = "rtmdet-tiny",
    epochs: int = 12,
    batch_size: int = 4,
    accelerator: str = "CPU",
    accelerator_count: int = 1,
    api_url: ApiUrl = None,
) -> None:
    """Start a training run."""
    spec = {"name": name, "dataset_id": dataset_id, "architecture": architecture, "epochs": epochs,
            "batch_size": batch_size, "accelerator": {"name": accelerator, "count": accelerator_count}}
    try:
        _print_json(_client(api_url).runs.start(spec))
    except TrainyardError as error:
        _fail(error)


@runs_app.command("list")
def runs_list(status: str | None = None, api_url: ApiUrl = None) -> None:
    """Runs, newest first."""
    table = Table("id", "name", "status", "progress", "mAP50")
    for run in _client(api_url).runs.list(status):
        progress = run["progress"]
        table.add_row(run["id"], run["name"], run["status"], f"{progress['epoch']}/{progress['total_epochs']}",
                      f"{run['latest_metrics'].get('bbox_mAP_50', float('nan')):.3f}")
    console.print(table)


@runs_app.command("get")
def runs_get(run_id: str, api_url: ApiUrl = None) -> None:
    """A run's status, progress and latest metrics."""
    try:
        _print_json(_client(api_url).runs.get(run_id))
    except TrainyardError as error:
        _fail(error)


@runs_app.command("logs")
def runs_logs(run_id: str, api_url: ApiUrl = None) -> None:
    """Per-epoch losses and metrics."""
    try:
        for epoch in _client(api_url).runs.logs(run_id):
            console.print(format_epoch(epoch))
    except TrainyardError as error:
        _fail(error)


@runs_app.command("matrix")
def runs_matrix(run_id: str, epoch: int | None = None, api_url: ApiUrl = None) -> None:
    """The confusion matrix of the latest (or a given) evaluation."""
    try:
        console.print(matrix_table(_client(api_url).runs.confusion_matrix(run_id, epoch)))
    except TrainyardError as error:
        _fail(error)


def format_epoch(epoch: dict[str, Any]) -> str:
    losses = " ".join(f"{k} {v:.3f}" for k, v in epoch["losses"].items() if k != "loss")
    m = epoch["metrics"]
    return (f"epoch {epoch['epoch']:>3}/{epoch['total_epochs']}  loss {epoch['loss']:.3f} ({losses})  "
            f"lr {epoch['learning_rate']:.2e}  mAP {m.get('bbox_mAP', 0):.3f} mAP50 {m.get('bbox_mAP_50', 0):.3f} "
            f"mAP75 {m.get('bbox_mAP_75', 0):.3f}  {epoch['epoch_time_s']:.1f} s")


def matrix_table(cm: dict[str, Any]) -> Table:
    table = Table(title=f"confusion matrix, epoch {cm['epoch']} (rows: ground truth, columns: predicted; "
                        f"score >= {cm['score_threshold']}, IoU >= {cm['iou_threshold']})")
    table.add_column("")
    for name in cm["classes"]:
        table.add_column(name, justify="right")
    for name, row in zip(cm["classes"], cm["matrix"], strict=True):
        table.add_row(name, *(str(v) for v in row))
    return table


def follow_run(client: TrainyardClient, run_id: str, poll_s: float = 1.0, timeout_s: float = 3600) -> dict[str, Any]:
    """Print each epoch as it is stored and status changes; return the finished run."""
    shown, last_status = 0, None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.runs.get(run_id)
        if run["status"] != last_status:
            where = f"on {run['trainer_id']} ({run.get('device') or 'starting'})" if run.get("trainer_id") else ""
            reason = run.get("pending_reason") or run.get("message") or where
            console.print(f"[bold]{run['status']}[/bold] {reason}".rstrip())
            last_status = run["status"]
        for epoch in client.runs.logs(run_id)[shown:]:
            console.print(format_epoch(epoch))
            shown += 1
        if run["status"] in TERMINAL:
            return run
        time.sleep(poll_s)
    raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")


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
            console.print(f"stack up: API {stack.api_url}, logs in {stack.log_dir}")
            files = write_synthetic_coco(data_dir / "datasets" / "shapes")
            with TrainyardClient(stack.api_url) as client:
                dataset = client.datasets.register("shapes", str(files.root))
                console.print(f"dataset {dataset['id']}: {dataset['train']['image_count']} train / "
                              f"{dataset['val']['image_count']} val images, classes {', '.join(dataset['classes'])}")
                run = client.runs.start({"name": f"demo-{architecture}", "dataset_id": dataset["id"],
                                         "architecture": architecture, "epochs": epochs, "batch_size": batch_size})
                console.print(f"run {run['id']} created")
                run = follow_run(client, run["id"])
                logs = client.runs.logs(run["id"])
                if logs:
                    console.print(matrix_table(client.runs.confusion_matrix(run["id"])))
                final = logs[-1]["metrics"] if logs else {}
                console.print(f"run {run['id']} ended [bold]{run['status']}[/bold] after {len(logs)} epochs; "
                              f"final bbox mAP {final.get('bbox_mAP', 0):.3f}, mAP50 {final.get('bbox_mAP_50', 0):.3f}")
                if run["status"] != "success":
                    console.print(f"[red]{run.get('message')}[/red]")
                    raise typer.Exit(1)
    except (StackError, TrainyardError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error


if __name__ == "__main__":
    app()

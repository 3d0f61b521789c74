"""`runs follow` (and `runs start --follow`): status lines, a line per epoch, and a bar that
moves with the run's iteration logs and shows the run's own elapsed time and time left."""

import json
import math
import threading
from datetime import UTC, datetime
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from trainyard_client import TrainyardClient, TrainyardError
from trainyard_client.cli.common import console, duration, metric, shown, when
from trainyard_client.types import EpochLog, Run

# How often the bar asks for the run's newest iteration log.
POLL_S = 2.0


def format_epoch(epoch: EpochLog) -> str:
    """One epoch in one line under 80 columns."""
    m = epoch["metrics"]
    return (f"epoch {epoch['epoch']:>3}/{epoch['total_epochs']}  loss {epoch['loss']:.3f}  "
            f"lr {epoch['learning_rate']:.1e}  mAP {metric(m, 'bbox_mAP')}  "
            f"mAP50 {metric(m, 'bbox_mAP_50')}  {epoch['epoch_time_s']:.1f}s")


def steps_per_epoch(client: TrainyardClient, run: Run) -> int:
    """Iterations in one epoch: training images over the effective batch (batch x accelerators)."""
    spec = run["spec"]
    images = client.datasets.get(spec["dataset_id"])["train"]["image_count"]
    return max(1, math.ceil(images / (spec["batch_size"] * spec["accelerator"]["count"])))


class RunClock:
    """The run's own training time (not the follower's) and what is left at its current pace."""

    def __init__(self, run: Run) -> None:
        self.update(run)

    def update(self, run: Run) -> None:
        self.fetched_at = datetime.now(UTC)
        self.trained_s = run["duration_s"] or 0.0
        self.running = run["status"] == "in_progress"

    def elapsed_s(self) -> float:
        if not self.running:
            return self.trained_s
        return self.trained_s + (datetime.now(UTC) - self.fetched_at).total_seconds()

    def left_s(self, done: float, total: float) -> float | None:
        return None if done <= 0 or total <= 0 else self.elapsed_s() * (total - done) / done


class NewestStep:
    """The run's newest logged iteration step, asking only for the logs after the last one seen:
    each poll is small, and the API's cap on one answer (10,000 logs) never stops the bar."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.step: int | None = None

    def poll(self, client: TrainyardClient) -> int | None:
        """Read every iteration log after the newest seen (page after page); the newest step so far."""
        while True:
            logs = client.runs.logs(self.run_id, "iteration", after_step=self.step or 0)
            if not logs:
                return self.step
            self.step = max(int(entry["step"]) for entry in logs)


def _watch_iterations(client: TrainyardClient, run_id: str, progress: Progress, bar: TaskID,
                      clock: RunClock, stop: threading.Event) -> None:
    """Move the bar to the newest iteration log until `stop`; the client is this thread's own."""
    total = progress.tasks[0].total or 0
    newest = NewestStep(run_id)
    with client:
        while not stop.wait(POLL_S):
            try:
                run = client.runs.get(run_id)
                step = newest.poll(client)
            except TrainyardError:
                continue
            clock.update(run)
            done = float(step) if step is not None else progress.tasks[0].completed
            left = clock.left_s(done, total)
            progress.update(bar, completed=done, clock=f"{duration(clock.elapsed_s())} elapsed, "
                                                        f"{duration(left) if left is not None else '?'} left")


def follow_run(client: TrainyardClient, run_id: str, *, as_json: bool = False) -> Run:
    """Show a run live until it ends; the run as it ended."""
    if as_json:
        for event in client.runs.follow(run_id):
            typer.echo(json.dumps({"id": event.id, "event": event.event, "data": event.data}))
        return client.runs.get(run_id)
    run = client.runs.get(run_id)
    per_epoch = steps_per_epoch(client, run)
    total = per_epoch * run["progress"]["total_epochs"]
    clock = RunClock(run)
    columns = (TextColumn("[bold]{task.fields[status]}"), BarColumn(bar_width=20),
               TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), TextColumn("{task.fields[clock]}"))
    stop = threading.Event()
    connection = client.connection
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("run", total=total, completed=run["progress"]["epoch"] * per_epoch,
                                status=run["status"], epoch=run["progress"]["epoch"],
                                epochs=run["progress"]["total_epochs"], clock="")
        watcher = threading.Thread(target=_watch_iterations, daemon=True, args=(
            TrainyardClient(connection.url, connection.api_key), run_id, progress, bar, clock, stop))
        watcher.start()
        try:
            for event in client.runs.follow(run_id):
                _show_event(progress, bar, event.event, event.data, per_epoch)
        finally:
            stop.set()
            watcher.join(timeout=POLL_S * 3)
    final = client.runs.get(run_id)
    colour = "green" if final["status"] == "success" else "red"
    console.print(f"run {run_id} [{colour}]{final['status']}[/{colour}]: {shown(final['overview'])}",
                  highlight=False)
    return final


def _show_event(progress: Progress, bar: TaskID, kind: str, data: dict[str, Any], per_epoch: int) -> None:
    if kind == "status":
        message = f" {shown(data['message'])}" if data.get("message") else ""
        progress.console.print(f"{when(data['at'])}  [bold]{shown(data['status'])}[/bold]{message}",
                               highlight=False)
        progress.update(bar, status=data["status"])
    elif kind == "epoch":
        progress.console.print(format_epoch(data), highlight=False, markup=False)  # type: ignore[arg-type]
        progress.update(bar, epoch=data["epoch"], completed=max(progress.tasks[0].completed,
                                                                data["epoch"] * per_epoch))
    elif kind == "end":
        progress.update(bar, status=data["status"])

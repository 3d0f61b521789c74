"""The `trainyard` commands that need the platform, not just the HTTP API: a local stack
(`up`, `down`, `demo`), a trainer joining a stack (`trainer`), a project's first key
straight into MongoDB (`keys bootstrap`) and generated datasets (`datasets synth`).

The client's CLI (trainyard_client.cli) adds them when this distribution is installed.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit, urlunsplit

import typer
from rich.console import Console

from trainyard.localstack import SERVICES, STATE_FILE, LocalStack, StackError, stop_recorded_stack
from trainyard.supervisor import DEATH_WINDOW_S, MAX_DEATHS, Supervisor
from trainyard_client import TrainyardClient, TrainyardError

# Not imported from trainyard_client.cli: that package adds these commands when it loads,
# so importing it from here would be circular; the CLI's helpers are imported where used.
console = Console(soft_wrap=True)
DataDir = Annotated[Path, typer.Option(help="where the local stack keeps all its data", envvar="TRAINYARD_DATA_DIR")]
Listen = Annotated[str, typer.Option(help="address NATS, the API and /metrics listen on: 0.0.0.0 lets "
                                          "other machines (a GPU trainer) join")]


def up(
    data_dir: DataDir = Path(".trainyard"),
    api_port: int = 8000,
    listen: Listen = "127.0.0.1",
    max_deaths: Annotated[int, typer.Option(help="give up on a process that dies this many times within the window",
                                            min=1)] = MAX_DEATHS,
    death_window_s: Annotated[float, typer.Option(help="the window of --max-deaths, in seconds", min=1)]
    = DEATH_WINDOW_S,
) -> None:
    """Start NATS, the MongoDB-wire server and the four services, and keep them running: a process
    that dies is restarted in place. Ctrl-C or `trainyard down` stops them."""
    stack = LocalStack(data_dir.resolve(), nats_url=os.environ.get("TRAINYARD_NATS_URL"),
                       mongo_url=os.environ.get("TRAINYARD_MONGO_URL"), api_port=api_port, listen=listen)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def report(line: str) -> None:
        console.print(f"{datetime.now(UTC):%H:%M:%S} {line}", highlight=False)

    supervisor = Supervisor(stack, report=report, max_deaths=max_deaths, window_s=death_window_s)
    try:
        stack.start(SERVICES)
        lines = [f"NATS      {stack.nats_url}", f"MongoDB   {stack.mongo_url}", f"API       {stack.api_url}",
                 f"API key   {stack.api_key_file} (admin of project 'default')",
                 f"console   {stack.signin_link()} (one-time sign-in link; `trainyard ui` for another)"]
        lines += [f"metrics   {name:<10} {url}" for name, url in sorted(stack.metrics_urls().items())]
        if listen != "127.0.0.1" and stack.nats_url:
            port = urlsplit(stack.nats_url).port
            lines.append(f"join      trainyard trainer --nats-url nats://{socket.gethostname()}:{port}")
        lines += [f"logs      {stack.log_dir}", "stop with Ctrl-C or `trainyard down`"]
        console.print("\n".join(lines), highlight=False, markup=False)
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


def down(data_dir: DataDir = Path(".trainyard")) -> None:
    """Stop the stack that `trainyard up` started."""
    stopped = stop_recorded_stack(data_dir)
    console.print("stopped " + ", ".join(stopped) if stopped else f"no local stack is recorded in {data_dir}")


def unique_trainer_id() -> str:
    """The host name and a random suffix: two trainers on one host never share an id."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:50]
    return f"{host}-{uuid.uuid4().hex[:8]}"


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    if not user:
        return url
    parts = urlsplit(url)
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.hostname}:{parts.port or 4222}"))


def trainer(
    nats_url: Annotated[str, typer.Option(help="the stack's NATS (credentials may ride in it: "
                                               "nats://user:password@host:4222)", envvar="TRAINYARD_NATS_URL")],
    nats_user: Annotated[str | None, typer.Option(help="NATS user, when not in the URL")] = None,
    nats_password: Annotated[str | None, typer.Option(help="NATS password", envvar="TRAINYARD_NATS_PASSWORD",
                                                      show_default=False)] = None,
    trainer_id: Annotated[str | None, typer.Option("--id", help="[default: <host>-<random>]")] = None,
    work_root: Annotated[Path, typer.Option(help="where attempts are trained")] = Path(".trainyard/work"),
    accelerator: Annotated[str | None, typer.Option(help="accelerator name [default: detected]")] = None,
    count: Annotated[int | None, typer.Option(help="accelerators to offer [default: all detected]")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per child [default: every core]")] = None,
    subject_prefix: Annotated[str, typer.Option(help="the stack's subject prefix", envvar="TRAINYARD_SUBJECT_PREFIX")]
    = "",
) -> None:
    """Start one trainer against a stack's NATS, in the foreground, until Ctrl-C."""
    env = {"TRAINYARD_NATS_URL": with_credentials(nats_url, nats_user, nats_password),
           "TRAINYARD_TRAINER_ID": trainer_id or unique_trainer_id(),
           "TRAINYARD_WORK_ROOT": str(work_root.resolve()), "TRAINYARD_SUBJECT_PREFIX": subject_prefix,
           "PYTHONUNBUFFERED": "1"}
    optional = {"TRAINYARD_ACCELERATOR_NAME": accelerator, "TRAINYARD_ACCELERATOR_COUNT": count,
                "TRAINYARD_THREADS": threads}
    env.update({name: str(value) for name, value in optional.items() if value is not None})
    console.print(f"trainer {env['TRAINYARD_TRAINER_ID']} joining {urlsplit(nats_url).hostname}; "
                  f"work in {env['TRAINYARD_WORK_ROOT']}", highlight=False, markup=False)
    child = subprocess.Popen([sys.executable, "-m", "services.trainer.main"], env={**os.environ, **env})
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        raise typer.Exit(child.wait())
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)
        raise typer.Exit(child.wait()) from None


def keys_bootstrap(
    project: Annotated[str, typer.Option(help="the project the admin key is for")],
    name: str = "bootstrap admin",
    mongo_url: Annotated[str | None, typer.Option(help="[default: TRAINYARD_MONGO_URL]")] = None,
    mongo_db: Annotated[str | None, typer.Option(help="[default: TRAINYARD_MONGO_DB or trainyard]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the key and its id as JSON")] = False,
) -> None:
    """Write a project's first admin key straight into MongoDB (for operators with database access)."""
    from pymongo import MongoClient

    from shared.apikeys import PROJECT_PATTERN, Scope, new_key
    from shared.settings import CommonSettings
    from shared.store import API_KEYS

    if not re.match(PROJECT_PATTERN, project):
        console.print(f"[red]project must match {PROJECT_PATTERN}: {project!r} does not[/red]", highlight=False)
        raise typer.Exit(2)
    settings = CommonSettings()
    key, doc = new_key(project, name, [Scope.ADMIN], created_by="bootstrap", now=datetime.now(UTC))
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url or settings.mongo_url, serverSelectionTimeoutMS=5000)
    with client:
        client[mongo_db or settings.mongo_db][API_KEYS].insert_one(doc)
    if as_json:
        from trainyard_client.cli.common import print_json

        print_json({"id": doc["_id"], "project": project, "name": name, "scopes": [str(Scope.ADMIN)], "key": key})
        return
    console.print(f"admin key {doc['_id']} of project {project} (shown only now):")
    typer.echo(key)


def datasets_synth(
    out: Annotated[Path, typer.Option(help="directory to write the dataset to")],
    train_images: int = 32, val_images: int = 8, size: int = 128, seed: int = 0,
) -> None:
    """Write a COCO dataset of generated coloured shapes (3 classes)."""
    from trainyard.synth import write_synthetic_coco

    files = write_synthetic_coco(out, train_images=train_images, val_images=val_images, size=size, seed=seed)
    console.print(f"wrote {files.root} (classes: {', '.join(files.classes)})")


def demo(data_dir: DataDir = Path(".trainyard"), architecture: str = "rtmdet-tiny", epochs: int = 30,
         batch_size: int = 4) -> None:
    """Start the local stack, train a detector on generated shapes, show its results, stop."""
    from trainyard.synth import write_synthetic_coco
    from trainyard_client.cli.common import metric
    from trainyard_client.cli.follow import follow_run
    from trainyard_client.cli.runs import show_matrix

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
                # While it trains: watch it live in a browser, signed in by this link (once, 10 min).
                console.print(f"watch it in the console: {stack.signin_link()} (one-time sign-in link; then "
                              f"/console/runs/{run['id']}; `trainyard ui` for another link)",
                              highlight=False, markup=False)
                run = follow_run(client, run["id"])
                logs = [entry for entry in client.runs.logs(run["id"], "epoch") if entry["kind"] == "epoch"]
                if logs:
                    show_matrix(client.runs.confusion_matrix(run["id"]))
                    best = client.runs.best_epoch(run["id"])
                    console.print(f"best epoch {best['epoch']['epoch']}: bbox mAP {best['value']:.3f}")
                final = logs[-1]["metrics"] if logs else {}
                console.print(f"run {run['id']} ended [bold]{run['status']}[/bold] after {len(logs)} epochs; "
                              f"final bbox mAP {metric(final, 'bbox_mAP')}, mAP50 {metric(final, 'bbox_mAP_50')}")
                if run["status"] != "success":
                    console.print(f"[red]{run.get('message')}[/red]")
                    raise typer.Exit(1)
    except (StackError, TrainyardError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error


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
    console.print(f"console sign-in link (one-time): {link}", highlight=False, markup=False)
    if open_browser:
        webbrowser.open(link)


def register(app: typer.Typer, *, datasets: typer.Typer, keys: typer.Typer) -> None:
    """Add the platform's commands to the client's `trainyard` app."""
    for command in (up, down, demo, trainer, ui):
        app.command()(command)
    keys.command("bootstrap")(keys_bootstrap)
    datasets.command("synth")(datasets_synth)

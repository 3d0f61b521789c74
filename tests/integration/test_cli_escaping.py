"""The CLI never writes control characters from the server to a terminal: they show escaped."""

from pathlib import Path

from pymongo import MongoClient
from typer.testing import CliRunner

from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient
from trainyard_client.cli import app
from trainyard_client.cli.common import shown

EVIL = "evil\x1b[2J\x1b]0;owned\x07\x00name\u202e[red]x[/red]"


def test_shown_escapes_controls_and_markup() -> None:
    assert shown("a\x1bb\x00c\x7f\x9bd\u202e") == "a\\x1bb\\x00c\\x7f\\x9bd\\u202e"
    assert shown("line\nnext\ttab") == "line\nnext\ttab"
    assert shown("[red]x[/red]") == "\\[red]x\\[/red]"


def test_runs_list_and_get_show_a_hostile_run_name_escaped(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_service("api")
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = client.datasets.register("shapes", str(data))
        run = client.runs.start({"name": "plain", "dataset_id": dataset["id"], "architecture": "rtmdet-tiny"})
    # Stored as any earlier release (or another writer) could have stored it.
    mongo: MongoClient[dict[str, object]] = MongoClient(stack.mongo_url)
    try:
        mongo[stack.mongo_db].runs.update_one({"_id": run["id"]}, {"$set": {"name": EVIL}})
    finally:
        mongo.close()
    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_API_KEY": stack.admin_key,
                         "COLUMNS": "300"})
    # --wide: the whole name on one line (at 80 columns it folds, escaped all the same).
    for argv in (["runs", "list", "--wide"], ["runs", "get", run["id"]]):
        result = cli.invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x00" not in result.output and "\x07" not in result.output
        assert "\u202e" not in result.output
        assert "evil\\x1b[2J\\x1b]0;owned\\x07\\x00name\\u202e[red]x[/red]" in result.output, result.output
    # JSON for scripts keeps the name exact, escaped the JSON way.
    as_json = cli.invoke(app, ["runs", "get", run["id"], "--json"])
    assert "\x1b" not in as_json.output and "\\u001b[2J" in as_json.output

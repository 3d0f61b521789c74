"""The CLI as a newcomer meets it, against the real gateway: the data dir names the stack,
ids by prefix, a spec file with flags over it, 80-column tables, the catalogue commands."""

import json
from pathlib import Path

from typer.testing import CliRunner

from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient
from trainyard_client.cli import app


def _runner(**env: str) -> CliRunner:
    # Nothing from the environment picks the stack: only what each test passes (None unsets;
    # an empty TRAINYARD_API_KEY is an error of its own).
    unset: dict[str, str | None] = {"TRAINYARD_API_URL": None, "TRAINYARD_API_KEY": None, "TRAINYARD_DATA_DIR": None}
    return CliRunner(env={**unset, "COLUMNS": "80", **env})


def _widest(output: str) -> int:
    return max((len(line) for line in output.splitlines()), default=0)


def test_the_data_dir_picks_the_stack_and_is_named_when_nothing_answers(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_service("api")
    stack.write_state()
    cli = _runner()
    by_option = cli.invoke(app, ["runs", "list", "--data-dir", str(stack.data_dir)])
    assert by_option.exit_code == 0 and "status" in by_option.output, by_option.output
    by_env = _runner(TRAINYARD_DATA_DIR=str(stack.data_dir)).invoke(app, ["architectures"])
    assert by_env.exit_code == 0 and "rtmdet-tiny" in by_env.output, by_env.output
    assert _widest(by_env.output) <= 80, by_env.output

    empty = tmp_path / "elsewhere"
    missing = cli.invoke(app, ["runs", "list", "--data-dir", str(empty)])
    assert missing.exit_code == 1
    assert f"no local stack is recorded in {empty / 'stack.json'}" in missing.output.replace("\n", "")
    assert "TRAINYARD_DATA_DIR" in missing.output


def test_spec_file_with_flags_over_it_and_ids_by_prefix(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_service("api")
    cli = _runner(TRAINYARD_API_URL=stack.api_url, TRAINYARD_API_KEY=stack.admin_key)

    def trainyard(*args: str, exit_code: int = 0) -> str:
        result = cli.invoke(app, list(args))
        assert result.exit_code == exit_code, (args, result.output)
        return result.output

    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    dataset = json.loads(trainyard("datasets", "register", "shapes", str(files.root), "--json"))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"name: from-file\ndataset_id: {dataset['id']}\narchitecture: rtmdet-tiny\nepochs: 7\n"
                         "priority: 5\naccelerator: {name: CPU, count: 1}\ncheckpoint: {strategy: best}\n")
    started = json.loads(trainyard(
        "runs", "start", "-f", str(spec_file), "--epochs", "3", "--frozen-stages", "1", "--attempts", "2",
        "--timeout", "600", "--evaluation-interval", "2", "--checkpoint-metric", "bbox_mAP_50",
        "--checkpoint-interval", "3",
        "--limit-metric", "bbox_mAP", "--limit-value", "0.9", "--accelerator-count", "1", "--json"))
    spec = started["spec"]
    assert (spec["name"], spec["epochs"], spec["priority"], spec["num_frozen_stages"]) == ("from-file", 3, 5, 1)
    assert (spec["max_attempts"], spec["execution_timeout_s"], spec["evaluation_interval"]) == (2, 600, 2)
    assert spec["checkpoint"] == {"strategy": "best", "metric": "bbox_mAP_50", "keep": 2, "interval": 3}
    assert spec["limit"] == {"metric": "bbox_mAP", "value": 0.9}

    json_file = tmp_path / "spec.json"
    json_file.write_text(json.dumps({"dataset_id": dataset["id"][:6], "name": "from-json"}))
    bad = trainyard("runs", "start", "-f", str(json_file), exit_code=1)
    assert "error 422" in bad and "dataset_id" in bad  # the file's fields go to the API as they are
    second = json.loads(trainyard("runs", "start", "second", "--dataset", dataset["id"][:6], "--json"))
    assert second["spec"]["dataset_id"] == dataset["id"]

    # Any unambiguous start of an id will do; an ambiguous one lists the candidates.
    for prefix_of in (started["id"], second["id"]):
        unique = next(prefix_of[:n] for n in range(4, 33)
                      if not any(other.startswith(prefix_of[:n]) for other in (started["id"], second["id"])
                                 if other != prefix_of))
        assert json.loads(trainyard("runs", "get", unique, "--json"))["id"] == prefix_of
    shared = ""
    while started["id"][:len(shared) + 1] == second["id"][:len(shared) + 1]:
        shared = started["id"][:len(shared) + 1]
    if len(shared) >= 4:  # two random ids share 4 digits once in 65,536 tries
        ambiguous = trainyard("runs", "get", shared, exit_code=2)
        assert "ambiguous" in ambiguous and started["id"] in ambiguous and second["id"] in ambiguous
    other = json.loads(trainyard("datasets", "register", "shapes-2", str(files.root), "--json"))
    common = ""
    while dataset["id"][:len(common) + 1] == other["id"][:len(common) + 1]:
        common = dataset["id"][:len(common) + 1]
    ambiguous_dataset = trainyard("datasets", "get", common, exit_code=2)
    assert "ambiguous" in ambiguous_dataset and dataset["id"] in ambiguous_dataset and other["id"] in ambiguous_dataset
    assert "at least 4" in trainyard("runs", "get", started["id"][:2], exit_code=2)
    assert "no run id starts with" in trainyard("runs", "kill", "ffff0000", exit_code=1)

    listed = trainyard("runs", "list")
    assert started["id"][:8] in listed and _widest(listed) <= 80, listed
    wide = trainyard("runs", "list", "--wide")
    assert started["id"] in wide and second["id"] in wide
    shown = trainyard("runs", "get", started["id"][:8])
    assert started["id"] in shown and _widest(shown) <= 80, shown
    assert "not started" in trainyard("runs", "config", started["id"][:8], exit_code=1)
    assert "id" in trainyard("trainers")  # no trainer here: an empty table, not an error
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        assert {r["name"] for r in client.runs.list()["items"]} == {"from-file", "second"}


def test_keys_bootstrap_prints_json_for_scripts(stack: LocalStack) -> None:
    assert stack.mongo_url
    cli = _runner(TRAINYARD_MONGO_URL=stack.mongo_url, TRAINYARD_MONGO_DB=stack.mongo_db)
    result = cli.invoke(app, ["keys", "bootstrap", "--project", "delta", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["project"] == "delta" and created["scopes"] == ["admin"]
    assert created["key"].startswith(f"ty_{created['id']}_")

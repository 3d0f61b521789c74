"""All four services as processes on the real servers, training a real detector on the CPU."""

import json
import math
import time
from pathlib import Path

import pytest
import torch
from pymongo import MongoClient

from services.trainer.coco_eval import metric_names
from tests.conftest import service_log
from tests.helpers import wait_status, wait_until
from tests.integration.test_transfer import drop_class
from tests.unit.test_coco_eval import expected, pycocotools_eval
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import InvalidRequest, NotFoundError, TrainyardClient

pytestmark = pytest.mark.training


def test_run_trains_two_epochs_end_to_end(stack: LocalStack, tmp_path: Path) -> None:
    stack.start(("metrics", "scheduler", "api"))
    stack.start_service("trainer", TRAINYARD_TRAINER_ID="cpu-trainer-1", TRAINYARD_THREADS="1")
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=4, size=64)
    # The files list their categories out of id order: trained and evaluated all the same.
    for split in (files.layout().train, files.layout().val):
        coco = json.loads(Path(split.annotations).read_text())
        Path(split.annotations).write_text(json.dumps({**coco, "categories": coco["categories"][::-1]}))
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = client.datasets.register("shapes", str(files.root))
        run = client.runs.start({"name": "e2e", "dataset_id": dataset["id"], "architecture": "rtmdet-tiny",
                                 "epochs": 2, "batch_size": 4, "input_size": 64, "log_interval": 1})
        seen_statuses = [run["status"]]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run["status"] not in ("success", "failed", "aborted"):
            time.sleep(0.5)
            run = client.runs.get(run["id"])
            if run["status"] != seen_statuses[-1]:
                seen_statuses.append(run["status"])
        assert run["status"] == "success", (run, service_log(stack, "trainer")[-3000:])
        assert seen_statuses[-1] == "success" and "in_progress" in seen_statuses
        assert run["trainer_id"] == "cpu-trainer-1" and run["attempt"] == 1 and run["device"] == "cpu"
        assert [h["status"] for h in run["history"]] == ["created", "pending", "in_progress", "success"]

        logs = client.runs.logs(run["id"], "epoch")
        assert [e["epoch"] for e in logs] == [1, 2]
        for epoch in logs:
            assert {"loss_cls", "loss_bbox"} <= epoch["losses"].keys()
            assert all(math.isfinite(v) for v in [epoch["loss"], *epoch["losses"].values()])
            for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"):
                value = epoch["metrics"][key]
                assert value is not None and 0.0 <= value <= 1.0
        assert run["progress"] == {"epoch": 2, "total_epochs": 2, "percent": 100.0}

        # Iteration logs (every step here: 8 images, batch 4, 2 epochs) reach the metrics service.
        mongo: MongoClient[dict[str, object]] = MongoClient(stack.mongo_url)
        try:
            deadline = time.monotonic() + 20
            while mongo[stack.mongo_db].iterations.count_documents({"run_id": run["id"]}) < 4:
                assert time.monotonic() < deadline, "iteration logs never stored"
                time.sleep(0.2)
            steps = list(mongo[stack.mongo_db].iterations.find({"run_id": run["id"]}).sort("step", 1))
        finally:
            mongo.close()
        assert [(d["step"], d["epoch"]) for d in steps] == [(1, 1), (2, 1), (3, 2), (4, 2)]

        # Anyone can recompute every served metric from the served predictions with plain pycocotools.
        classes = list(files.classes)
        val_annotations = files.layout().val.annotations
        ids = {c["name"]: c["id"] for c in json.loads(Path(val_annotations).read_text())["categories"]}
        for epoch in logs:
            served = client.runs.predictions(run["id"], epoch["epoch"])
            assert served, "the tiny model predicted nothing: nothing to recompute"
            results = [dict(p) for p in served]
            recomputed = expected(pycocotools_eval(val_annotations, results, [ids[c] for c in classes]), classes)
            assert set(epoch["metrics"]) == set(metric_names(classes))  # every metric, none missing
            for name, value in recomputed.items():
                assert epoch["metrics"][name] == value, name  # exactly: the same computation on the same file
        assert client.runs.predictions(run["id"]) == client.runs.predictions(run["id"], 2)  # the latest by default
        with pytest.raises(NotFoundError, match=r"no predictions for epoch 9: .*\[1, 2\]"):
            client.runs.predictions(run["id"], 9)

        matrix = client.runs.confusion_matrix(run["id"])
        assert matrix["epoch"] == 2
        assert matrix["classes"] == [*files.classes, "Background"]
        assert len(matrix["matrix"]) == 4 and all(len(row) == 4 for row in matrix["matrix"])
        # Every ground-truth box of the val set is somewhere in its row.
        val_boxes = sum(dataset["val"]["boxes_per_class"].values())
        assert sum(sum(row) for row in matrix["matrix"][:3]) >= val_boxes

        # The run's trained model is in the registry, with its best epoch, and can be published.
        models = wait_until(lambda: client.models.list()["items"], 30, "the model to be registered")
        [model] = models
        assert model["run"] == {"id": run["id"], "name": "e2e", "status": "success"}
        assert model["architecture"] == "rtmdet-tiny" and model["classes"] == list(files.classes)
        assert model["checkpoint"] == f"models/{model['id']}.pth" and model["epochs"] == 2
        # The weights come from the artifact store, not from any trainer's disk.
        weights = client.models.download_weights(model["id"], tmp_path / "model.pth")
        saved = torch.load(weights, map_location="cpu", weights_only=False)
        assert saved["meta"]["run_id"] == run["id"] and saved["meta"]["epoch"] == 2
        assert "optimizer" not in saved and any(k.startswith("bbox_head.") for k in saved["state_dict"])
        stored = client.runs.checkpoints(run["id"])
        assert [c["epoch"] for c in stored["items"]] == [1, 2] and (stored["resume_from"] or {"epoch": 0})["epoch"] == 2
        assert all(c["size_bytes"] > 0 and c["digest"].startswith("SHA-256=") for c in stored["items"])
        assert not list((stack.data_dir / "work").rglob("*.pth")), "the trainer keeps no checkpoint once stored"
        by_map = max(logs, key=lambda e: (e["metrics"]["bbox_mAP"], -e["epoch"]))
        assert model["best_epoch"] == by_map["epoch"] and model["base_model_id"] is None
        best = client.request("GET", f"/v1/models/{model['id']}/best-epoch")
        assert best["epoch"] == by_map["epoch"] and best["value"] == by_map["metrics"]["bbox_mAP"]
        # The same best in the run's listing (the console's Best mAP column, `trainyard runs list`).
        [listed] = [item for item in client.runs.list()["items"] if item["id"] == run["id"]]
        assert listed["best"] == {"metric": "bbox_mAP", "value": by_map["metrics"]["bbox_mAP"],
                                  "epoch": by_map["epoch"], "attempt": 1}
        assert client.runs.get(run["id"])["best"] == listed["best"]
        assert client.models.publish(model["id"])["published"] is True
        assert [m["id"] for m in client.models.list(published=True)["items"]] == [model["id"]]
        assert client.models.unpublish(model["id"])["published"] is False
        lineage = client.request("GET", f"/v1/models/{model['id']}/lineage")
        assert [m["id"] for m in lineage["items"]] == [model["id"]]

        # Reproducible: the generated config is served; the catalogue says what can be tuned.
        config = client.request("GET", f"/v1/runs/{run['id']}/config")
        assert config["attempt"] == 1 and "num_classes=3" in config["config"].replace(" ", "")
        architectures = {a["id"]: a for a in client.request("GET", "/v1/architectures")}
        assert {"rtmdet-tiny", "yolox-tiny", "retinanet-r18", "retinanet-r50", "faster-rcnn-r18", "faster-rcnn-r50",
                "fcos-r18", "fcos-r50"} <= set(architectures)
        assert "learning_rate" in {p["name"] for p in architectures["rtmdet-tiny"]["parameters"]}

        # Transfer learning through the whole stack: fine-tune the model onto two classes.
        two = drop_class(files.layout(), "triangle")
        two_classes = client.datasets.register("two-shapes", str(files.root),
                                               train_annotations=two.train.annotations,
                                               val_annotations=two.val.annotations)
        wrong = {"name": "x", "dataset_id": two_classes["id"], "architecture": "yolox-tiny",
                 "base_model_id": model["id"]}
        with pytest.raises(InvalidRequest, match="is a rtmdet-tiny, the run a yolox-tiny"):
            client.runs.start(wrong)
        tuned = client.runs.start({"name": "tuned", "dataset_id": two_classes["id"], "architecture": "rtmdet-tiny",
                                   "epochs": 1, "batch_size": 4, "input_size": 64, "base_model_id": model["id"]})
        tuned_done = wait_status(client, tuned["id"], {"success", "failed", "aborted"}, 240)
        assert tuned_done["status"] == "success", (tuned_done, service_log(stack, "trainer")[-3000:])
        tuned_model = wait_until(lambda: [m for m in client.models.list()["items"] if m["run"]["id"] == tuned["id"]],
                                 30, "the fine-tuned model")[0]
        assert tuned_model["classes"] == ["circle", "square"] and tuned_model["base_model_id"] == model["id"]
        lineage = client.request("GET", f"/v1/models/{tuned_model['id']}/lineage")
        assert [m["id"] for m in lineage["items"]] == [tuned_model["id"], model["id"]]

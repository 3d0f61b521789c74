"""docs/asyncapi.yaml is generated from the event models and subjects, and kept in step with them."""

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from shared import events, sweeps
from shared.subjects import Subjects
from trainyard.asyncapi import channels, document

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asyncapi.yaml"


def test_docs_asyncapi_yaml_is_up_to_date() -> None:
    check = subprocess.run([sys.executable, "scripts/generate_asyncapi.py", "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_every_event_and_every_subject_is_documented() -> None:
    event_models = {
        cls for module in (events, sweeps) for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, events.Event) and cls not in (events.Event, events.RunEvent, sweeps.SweepEvent)
    }
    assert event_models == {c.message for c in channels()}
    subject_names = {name for name, _ in inspect.getmembers(Subjects) if not name.startswith("_")}
    subject_names -= {"prefix", "stream", "stream_subjects", "reporting_trainer"}
    documented = {c.address for c in channels()}
    for name in subject_names:
        attribute = getattr(Subjects(), name)
        address = attribute("{x}") if callable(attribute) else attribute
        assert re.sub(r"\{[a-z_]+\}", "{x}", address) in {re.sub(r"\{[a-z_]+\}", "{x}", a) for a in documented}, name


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_document_is_consistent_asyncapi_3() -> None:
    doc = yaml.safe_load(DOC.read_text().split("\n", 1)[1])  # the committed file, current (test above)
    assert doc == document() and doc["asyncapi"] == "3.0.0"
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    for channel in doc["channels"].values():
        assert set(re.findall(r"\{(\w+)\}", channel["address"])) == set(channel.get("parameters", {}))

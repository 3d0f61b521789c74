"""Comparing 2 to 10 runs: their metric series side by side, final and best metrics, and what differs.

One endpoint, so the console, the client and the CLI all show the same comparison.
Its path sits beside `/v1/runs/{run_id}`; this router is included first, so
`compare` is never taken for a run id.
"""

import difflib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.api.auth import RunsReader
from services.api.deps import Store
from services.api.errors import NotFound, Unprocessable, problem_responses
from services.api.models import MetricSeries
from services.api.views import default_mode, metric_series, run_out
from shared.events import utcnow
from shared.run_document import RunDocument

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problem_responses(403, 404))
MIN_RUNS, MAX_RUNS = 2, 10
RUN_ID = re.compile(r"[0-9a-f]{32}")
# The metrics a table of runs shows; any other series is still in `series`.
COMPARED_METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "precision_50", "recall_50", "loss")
# The generated config's own line naming the directory its attempt trains in.
WORK_DIR_LINE = re.compile(r"^work_dir\s*=\s*(?P<quote>['\"])(?P<path>[^'\"]+)(?P=quote)", re.MULTILINE)
WORK_DIR = "<work_dir>"


class BestValue(BaseModel):
    value: float
    epoch: int


class ComparedRun(BaseModel):
    id: str
    name: str
    status: str
    architecture: str
    dataset_id: str
    epochs_done: int
    duration_s: float | None
    final_metrics: dict[str, float | None] = Field(description="the last evaluated epoch's values; null where "
                                                               "COCO's is undefined (no ground truth of that size)")
    best_metrics: dict[str, BestValue] = Field(description="per metric its best value (max, min for losses) "
                                                           "and the epoch it came from")
    series: MetricSeries


class FieldDifference(BaseModel):
    field: str = Field(description="dotted path in the run spec, e.g. `checkpoint.strategy`")
    values: list[Any] = Field(description="the value of each run, in the order of `runs`")


class ConfigDifference(BaseModel):
    run_id: str
    diff: str = Field(description="unified diff of this run's generated config against the first run's, each "
                                  "attempt's own directory written as <work_dir>; "
                                  "empty when equal or when either has no config yet")


class RunComparison(BaseModel):
    runs: list[ComparedRun]
    spec_differences: list[FieldDifference] = Field(description="spec fields whose values are not all equal")
    config_differences: list[ConfigDifference] = Field(description="for each run after the first")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def _best(epochs: list[dict[str, Any]]) -> dict[str, BestValue]:
    best: dict[str, BestValue] = {}
    for metric in COMPARED_METRICS:
        scored = [(doc["loss"] if metric == "loss" else doc.get("metrics", {}).get(metric), int(doc["epoch"]))
                  for doc in epochs]
        values = [(float(v), e) for v, e in scored if isinstance(v, int | float)]
        if values:
            sign = 1 if default_mode(metric) == "max" else -1
            value, epoch = max(values, key=lambda pair: (sign * pair[0], -pair[1]))
            best[metric] = BestValue(value=value, epoch=epoch)
    return best


def config_lines(config: str) -> list[str]:
    """The config's lines with its attempt's directory written as <work_dir>: every attempt trains in a
    directory of its own, and the paths under it (work_dir, the annotation copies, the metric's output)
    would otherwise be a difference between any two runs."""
    found = WORK_DIR_LINE.search(config)
    return (config.replace(found["path"], WORK_DIR) if found else config).splitlines()


def _config_diff(first: RunDocument, other: RunDocument) -> str:
    if not first.config or not other.config:
        return ""
    lines = difflib.unified_diff(config_lines(first.config), config_lines(other.config),
                                 fromfile=f"{first.id}/config.py", tofile=f"{other.id}/config.py",
                                 lineterm="", n=1)
    return "\n".join(lines)


@router.get("/compare", responses=problem_responses(422))
async def compare_runs(
    caller: RunsReader,
    store: Store,
    ids: Annotated[str, Query(min_length=1, max_length=400, description="2 to 10 run ids, comma-separated")],
) -> RunComparison:
    """Runs side by side: metric series, final and best metrics, differing spec fields and config diffs."""
    wanted = [part.strip() for part in ids.split(",") if part.strip()]
    if not MIN_RUNS <= len(wanted) <= MAX_RUNS:
        raise Unprocessable(f"query.ids: compare {MIN_RUNS} to {MAX_RUNS} runs, got {len(wanted)}",
                            [{"field": "query.ids", "message": f"{MIN_RUNS} to {MAX_RUNS} run ids", "value": ids}])
    if len(set(wanted)) != len(wanted):
        raise Unprocessable("query.ids: a run is named twice", [{"field": "query.ids", "message": "duplicate id",
                                                                 "value": ids}])
    for run_id in wanted:
        if not RUN_ID.fullmatch(run_id):
            raise Unprocessable(f"query.ids: {run_id!r} is not a run id",
                                [{"field": "query.ids", "message": "not a run id", "value": run_id}])
    docs = []
    for run_id in wanted:
        doc = await store.run(caller.project, run_id)
        if doc is None:
            raise NotFound("run", run_id)
        docs.append(doc)
    now = utcnow()
    compared = []
    for doc in docs:
        epochs = await store.epochs_of(doc.id)
        out = run_out(doc, epochs[-1] if epochs else None, now)
        final = dict(epochs[-1].get("metrics", {})) | {"loss": epochs[-1]["loss"]} if epochs else {}
        compared.append(ComparedRun(
            id=out.id, name=out.name, status=out.status, architecture=out.spec.architecture,
            dataset_id=out.spec.dataset_id, epochs_done=out.progress.epoch, duration_s=out.duration_s,
            final_metrics=final, best_metrics=_best(epochs), series=metric_series(doc.id, epochs, None)))
    specs = [_flatten(doc.spec.model_dump(mode="json")) for doc in docs]
    fields = sorted({name for spec in specs for name in spec} - {"name"})
    differences = [FieldDifference(field=name, values=[spec.get(name) for spec in specs]) for name in fields
                   if len({repr(spec.get(name)) for spec in specs}) > 1]
    configs = [ConfigDifference(run_id=doc.id, diff=_config_diff(docs[0], doc)) for doc in docs[1:]]
    return RunComparison(runs=compared, spec_differences=differences, config_differences=configs)

"""The client's response types against the API's own OpenAPI document: a renamed, added,
dropped or retyped field of a response model fails here (and the check itself is shown
to fail on a copy of the document with one field renamed)."""

import copy
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from services.api.main import create_app
from shared.apikeys import Scope
from shared.settings import ApiSettings
from trainyard_client import types as client_types
from trainyard_client.cli.keys import Scope as CliScope

# Each TypedDict of the client and the schema of the API response model it mirrors.
MIRRORS: dict[str, type] = {
    "Progress": client_types.Progress, "StatusChange": client_types.StatusChange,
    "AcceleratorRequest": client_types.AcceleratorRequest, "CheckpointPolicy": client_types.CheckpointPolicy,
    "StopLimit": client_types.StopLimit, "RunSpec": client_types.RunSpec, "RunOut": client_types.Run,
    "RunList": client_types.RunPage, "SplitOut": client_types.SplitSummary, "DatasetOut": client_types.Dataset,
    "DatasetList": client_types.DatasetPage, "EpochLog": client_types.EpochLog,
    "IterationLog": client_types.IterationLog, "RunLogs": client_types.RunLogs,
    "MetricSeries": client_types.MetricSeries, "BestEpoch": client_types.BestEpoch,
    "ConfusionMatrixOut": client_types.ConfusionMatrix, "CellCount": client_types.CellCount,
    "ConfusionColumn": client_types.ConfusionColumn,
    "DatatureConfusionMatrixOut": client_types.DatatureConfusionMatrix,
    "PreviewImageOut": client_types.PreviewImage, "EpochPreviews": client_types.EpochPreviews,
    "RunPreviews": client_types.RunPreviews, "RunConfigOut": client_types.RunConfig,
    "TunableParameter": client_types.TunableParameter, "ArchitectureOut": client_types.Architecture,
    "TrainerRun": client_types.TrainerRun, "TrainerOut": client_types.Trainer,
    "BestCheckpoint": client_types.BestCheckpoint, "StoredCheckpoint": client_types.StoredCheckpoint,
    "CheckpointOut": client_types.Checkpoint, "RunCheckpoints": client_types.RunCheckpoints,
    "ModelRunOut": client_types.ModelRun, "ModelOut": client_types.Model, "ModelList": client_types.ModelPage,
    "BestEpochOut": client_types.ModelBestEpoch, "ApiKeyOut": client_types.ApiKey,
    "CreatedApiKey": client_types.CreatedApiKey, "ApiKeyList": client_types.ApiKeyPage,
    "WhoAmI": client_types.WhoAmI,
}
PYTHON_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(ApiSettings()).openapi()


def schema_kinds(schema: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The JSON types a property may take (a reference or an object is 'object')."""
    if "$ref" in schema:
        target = schemas[schema["$ref"].rsplit("/", 1)[1]]
        return {"string"} if "enum" in target else {"object"}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return set().union(*(schema_kinds(option, schemas) for option in schema[key]))
    if "const" in schema or "enum" in schema:
        return {"string"} if schema.get("type", "string") == "string" else {schema["type"]}
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind or [])


def annotation_kinds(annotation: Any) -> set[str]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(annotation_kinds(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {PYTHON_TO_JSON[type(value)] for value in get_args(annotation)}
    if origin is list:
        return {"array"}
    if origin is dict or is_typeddict(annotation):
        return {"object"}
    return {PYTHON_TO_JSON[annotation]}


def drift(document: dict[str, Any]) -> list[str]:
    """Every difference between the client's TypedDicts and the document's response schemas."""
    schemas = document["components"]["schemas"]
    found = []
    for name, typed in MIRRORS.items():
        if name not in schemas:
            found.append(f"{name}: no such schema in the API's document")
            continue
        properties = schemas[name]["properties"]
        hints = get_type_hints(typed)
        for field in sorted(set(properties) ^ set(hints)):
            side = "only the API has" if field in properties else "only the client has"
            found.append(f"{name}.{field}: {side} it ({typed.__name__})")
        for field in sorted(set(properties) & set(hints)):
            api, client = schema_kinds(properties[field], schemas), annotation_kinds(hints[field])
            # A float field takes integers too: against one, the API's "integer" reads as "number".
            if "number" in client:
                api, client = ({"number" if kind == "integer" else kind for kind in side} for side in (api, client))
            if api != client:
                found.append(f"{name}.{field}: API {sorted(api)}, client {sorted(client)}")
    return found


def test_the_client_types_match_the_apis_response_models(openapi: dict[str, Any]) -> None:
    assert drift(openapi) == []


def test_a_renamed_field_of_a_response_model_is_drift(openapi: dict[str, Any]) -> None:
    renamed = copy.deepcopy(openapi)
    properties = renamed["components"]["schemas"]["RunOut"]["properties"]
    properties["trainer"] = properties.pop("trainer_id")
    assert drift(renamed) == ["RunOut.trainer: only the API has it (Run)",
                              "RunOut.trainer_id: only the client has it (Run)"]


def test_a_retyped_field_is_drift(openapi: dict[str, Any]) -> None:
    retyped = copy.deepcopy(openapi)
    retyped["components"]["schemas"]["Progress"]["properties"]["epoch"] = {"type": "string"}
    assert drift(retyped) == ["Progress.epoch: API ['string'], client ['integer']"]


def test_the_cli_offers_exactly_the_apis_scopes() -> None:
    assert [str(s) for s in CliScope] == [str(s) for s in Scope]

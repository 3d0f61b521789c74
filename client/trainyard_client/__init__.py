"""Typed Python clients of the trainyard HTTP API: `TrainyardClient` (blocking) and `AsyncTrainyardClient`.

Both mirror the API resource by resource (`client.runs.start/list/get/kill/rerun/remove/logs/...`,
`client.datasets`, `client.models`, `client.trainers`, `client.architectures`, `client.keys`)
and raise a `TrainyardError` subclass carrying the API's problem details when a call fails.
The blocking one is generated from the async one (trainyard_client/_async/client.py).
"""

from trainyard_client._async.client import AsyncTrainyardClient
from trainyard_client._sync.client import TrainyardClient
from trainyard_client.calls import RunEvent, preview_file, resolve_connection
from trainyard_client.errors import (
    ApiUnreachable,
    AuthenticationError,
    ConflictError,
    EmptyApiKey,
    InvalidRequest,
    NotFoundError,
    PermissionDenied,
    ServerError,
    TrainyardError,
    error_from_response,
)
from trainyard_client.types import (
    ApiKey,
    Architecture,
    BestEpoch,
    Checkpoint,
    ConfusionMatrix,
    CreatedApiKey,
    Dataset,
    DatasetPage,
    EpochLog,
    IterationLog,
    LogEntry,
    MetricSeries,
    Model,
    Run,
    RunCheckpoints,
    RunConfig,
    RunPage,
    RunPreviews,
    RunSpec,
    Trainer,
    WhoAmI,
)

__all__ = [
    "ApiKey",
    "ApiUnreachable",
    "Architecture",
    "AsyncTrainyardClient",
    "AuthenticationError",
    "BestEpoch",
    "Checkpoint",
    "ConflictError",
    "ConfusionMatrix",
    "CreatedApiKey",
    "Dataset",
    "DatasetPage",
    "EmptyApiKey",
    "EpochLog",
    "InvalidRequest",
    "IterationLog",
    "LogEntry",
    "MetricSeries",
    "Model",
    "NotFoundError",
    "PermissionDenied",
    "Run",
    "RunCheckpoints",
    "RunConfig",
    "RunEvent",
    "RunPage",
    "RunPreviews",
    "RunSpec",
    "ServerError",
    "Trainer",
    "TrainyardClient",
    "TrainyardError",
    "WhoAmI",
    "error_from_response",
    "preview_file",
    "resolve_connection",
]

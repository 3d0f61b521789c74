"""Request dependencies as Annotated aliases, resolved from the app's state."""

from typing import Annotated

from fastapi import Depends, Request
from faststream.nats import NatsBroker

from services.api.store import ApiStore
from shared.artifacts import Artifacts
from shared.settings import ApiSettings
from shared.subjects import Subjects


def _store(request: Request) -> ApiStore:
    store: ApiStore = request.app.state.store
    return store


def _broker(request: Request) -> NatsBroker:
    broker: NatsBroker = request.app.state.broker
    return broker


def _subjects(request: Request) -> Subjects:
    subjects: Subjects = request.app.state.subjects
    return subjects


def _artifacts(request: Request) -> Artifacts:
    artifacts: Artifacts = request.app.state.artifacts
    return artifacts


Store = Annotated[ApiStore, Depends(_store)]
ArtifactStore = Annotated[Artifacts, Depends(_artifacts)]
Bus = Annotated[NatsBroker, Depends(_broker)]
SubjectNames = Annotated[Subjects, Depends(_subjects)]


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


Settings = Annotated[ApiSettings, Depends(_settings)]

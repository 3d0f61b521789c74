"""Real servers for the whole session; each test gets its own database and subjects."""

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from shared.bus import ensure_stream
from shared.subjects import Subjects
from trainyard.localstack import LocalStack


@pytest.fixture(scope="session", autouse=True)
def dataset_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests write datasets under their tmp_path: the API they start may register those, nothing else."""
    root = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINYARD_DATASET_ROOTS", str(root))
        yield root


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("servers"))
    stack.start_servers()
    yield stack
    stack.stop()


@pytest.fixture
def stack(servers: LocalStack, tmp_path: Path) -> Iterator[LocalStack]:
    """Services started by a test run against the shared servers under a private namespace."""
    namespace = "t" + uuid.uuid4().hex[:10]
    test_stack = LocalStack(
        tmp_path / "stack",
        nats_url=servers.nats_url,
        mongo_url=servers.mongo_url,
        mongo_db=namespace,
        subject_prefix=namespace,
    )
    test_stack.data_dir.mkdir(parents=True)
    yield test_stack
    test_stack.stop()


def service_log(stack: LocalStack, name: str) -> str:
    path = stack.log_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
async def bus(stack: LocalStack) -> AsyncIterator[tuple[NatsBroker, Subjects]]:
    """A broker on the test's namespace, for tests that publish or watch events themselves."""
    stack.start_servers()
    assert stack.nats_url
    broker = NatsBroker(stack.nats_url)
    await broker.connect()
    subjects = Subjects(stack.subject_prefix)
    await ensure_stream(broker, subjects)
    yield broker, subjects
    await broker.stop()

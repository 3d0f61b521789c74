"""A trainer's default id: unique per work root on a host, stable across its restarts."""

import socket
from pathlib import Path

from services.trainer.worker import default_trainer_id
from trainyard.commands import unique_trainer_id, with_credentials


def test_two_trainers_on_one_host_get_different_ids_and_each_keeps_its_own(tmp_path: Path) -> None:
    first, second = default_trainer_id(str(tmp_path / "a")), default_trainer_id(str(tmp_path / "b"))
    assert first != second and first == default_trainer_id(str(tmp_path / "a"))
    assert first.startswith(socket.gethostname().replace(".", "-")[:20])
    assert unique_trainer_id() != unique_trainer_id()


def test_nats_credentials_join_the_url() -> None:
    assert with_credentials("nats://gpu-box:4222", "trainer", "p@ss") == "nats://trainer:p%40ss@gpu-box:4222"
    assert with_credentials("nats://gpu-box", None, None) == "nats://gpu-box"

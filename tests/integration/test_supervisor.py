"""The supervisor on real processes: restarts in place with backoff, gives up on one that keeps dying."""

import os
import signal
import sys
from pathlib import Path

from shared.exits import describe_exit
from tests.helpers import wait_until
from trainyard.localstack import LocalStack
from trainyard.supervisor import Supervisor


def test_a_killed_process_is_restarted_with_its_arguments_and_environment(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    said: list[str] = []
    supervisor = Supervisor(stack, report=said.append, first_backoff_s=0.1)
    try:
        argv = [sys.executable, "-c", "import os, time; print(os.environ['MARK'], flush=True); time.sleep(600)"]
        first = stack._spawn("sleeper", argv, {"MARK": "same-env"})
        log = stack.log_dir / "sleeper.log"
        wait_until(lambda: "same-env" in log.read_text(), 10, "the first process to start")
        os.kill(first.pid, signal.SIGKILL)

        def restarted() -> bool:
            supervisor.check()
            return stack.processes["sleeper"].pid != first.pid

        wait_until(restarted, 10, "the restart")
        wait_until(lambda: log.read_text().count("same-env") == 2, 10,
                   "the restarted process to print its environment")
        assert said[0].startswith("sleeper killed by signal 9 (SIGKILL) (restarts so far: 0); restarting it in 0.1 s")
        assert said[1].startswith("sleeper restarted (pid ") and said[1].endswith("restart 1)")
        assert supervisor.restarts("sleeper") == 1
    finally:
        stack.stop()


def test_a_process_that_keeps_dying_is_given_up_after_growing_backoffs(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    said: list[str] = []
    supervisor = Supervisor(stack, report=said.append, max_deaths=3, window_s=60, first_backoff_s=0.2)
    try:
        stack._spawn("crasher", [sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"])

        def gave_up() -> bool:
            supervisor.check()
            return bool(supervisor.given_up())

        wait_until(gave_up, 30, "the supervisor to give up")
        deaths = [line for line in said if "exited with code 3" in line]
        # The backoff doubles with each death.
        assert "restarting it in 0.2 s" in deaths[0] and "restarting it in 0.4 s" in deaths[1], said
        assert "died 3 times within 60 s: giving up on it" in deaths[2] and "no config" in deaths[2], said
        assert supervisor.given_up() == ["crasher"] and supervisor.restarts("crasher") == 2
        # Given up means left alone: no more restarts however often it is checked.
        supervisor.check()
        assert supervisor.restarts("crasher") == 2 and len(said) == len(deaths) + 2
    finally:
        stack.stop()


def test_exits_are_described_by_code_or_signal_name() -> None:
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-15) == "killed by signal 15 (SIGTERM)"

"""Keeps a local stack alive: a child that dies is restarted in place, with backoff.

The stack's processes are independent (the services reconnect to NATS and the
database server, the scheduler and the trainers recover their runs from what
is stored), so one dead process is restarted alone instead of the whole stack
going down with it: stopping everything hands back every running run.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.exits import describe_exit
from trainyard.localstack import LocalStack

# A process that dies this many times within the window is given up.
MAX_DEATHS = 5
DEATH_WINDOW_S = 120.0
# Backoff before a restart: doubles with each death inside the window.
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


@dataclass
class Watched:
    deaths: deque[float] = field(default_factory=deque)
    restarts: int = 0
    restart_at: float | None = None
    given_up: bool = False


@dataclass
class Supervisor:
    """Call `check()` every so often (`trainyard up` does, about twice a second)."""

    stack: LocalStack
    report: Callable[[str], None] = print
    max_deaths: int = MAX_DEATHS
    window_s: float = DEATH_WINDOW_S
    first_backoff_s: float = FIRST_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    clock: Callable[[], float] = time.monotonic
    watched: dict[str, Watched] = field(default_factory=dict)

    def restarts(self, name: str) -> int:
        return self.watched[name].restarts if name in self.watched else 0

    def given_up(self) -> list[str]:
        return [name for name, state in self.watched.items() if state.given_up]

    def _log(self, name: str) -> Path:
        return self.stack.log_dir / f"{name}.log"

    def _last_lines(self, name: str, count: int = 3) -> str:
        """The end of its log, which is where a crash says why (an exception ends with its message)."""
        path = self._log(name)
        if not path.exists():
            return ""
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()[-50:] if line.strip()]
        return " | ".join(lines[-count:])[:500]

    def check(self) -> None:
        now = self.clock()
        for name, proc in list(self.stack.processes.items()):
            state = self.watched.setdefault(name, Watched())
            if state.given_up:
                continue
            if state.restart_at is None:
                if proc.poll() is None:
                    continue
                self._died(name, proc.returncode, state, now)
            if state.restart_at is not None and now >= state.restart_at:
                state.restart_at = None
                state.restarts += 1
                new = self.stack.restart_process(name)
                self.stack.write_state()
                self.report(f"{name} restarted (pid {new.pid}, restart {state.restarts})")

    def _died(self, name: str, returncode: int, state: Watched, now: float) -> None:
        state.deaths.append(now)
        while state.deaths and state.deaths[0] < now - self.window_s:
            state.deaths.popleft()
        how = describe_exit(returncode)
        last = self._last_lines(name)
        said = f"; its log ends: {last}" if last else ""
        if len(state.deaths) >= self.max_deaths:
            state.given_up = True
            self.report(f"{name} {how} and died {len(state.deaths)} times within {self.window_s:.0f} s: "
                        f"giving up on it, not restarting it again (restarted {state.restarts} times); "
                        f"see {self._log(name)}{said}")
            return
        backoff = min(self.first_backoff_s * 2 ** (len(state.deaths) - 1), self.max_backoff_s)
        state.restart_at = now + backoff
        self.report(f"{name} {how} (restarts so far: {state.restarts}); restarting it in {backoff:g} s{said}")

    def run_until(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Check until `stop` is set (a thread of its own, in the tests)."""
        while not stop.wait(interval_s):
            self.check()

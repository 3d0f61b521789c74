"""Starting an attempt's training processes and stopping them as one.

One process trains a run on one accelerator. A run holding N > 1 gets N
processes, one distributed data parallel rank each, started here rather than
through torchrun (docs/architecture.md, "Distributed data parallel"): every
rank gets torch's env:// rendezvous (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), the report pipe, and stays in the trainer's
process group. When one rank fails the others are stopped at once: they would
otherwise wait in their next collective operation until its timeout.
"""

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from services.trainer.lifeline import TRAINER_PID_VARIABLE, peak_memory_bytes
from shared.exits import ended_how

CHILD_MODULE = "services.trainer.child"
# Report lines can be long (an epoch's confusion matrix, many classes).
REPORT_LINE_LIMIT = 16 * 2**20
LOCALHOST = "127.0.0.1"
# A rank asked to stop gets this long to exit before it is killed.
DEFAULT_GRACE_S = 5.0
# How often each rank's peak memory is read.
MEMORY_POLL_S = 0.5
# Set for each rank; never inherited (a single child must not think it is a rank).
RENDEZVOUS_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port(host: str = LOCALHOST) -> int:
    """A port nothing listens on now, for rank 0's rendezvous store."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def rank_environments(world_size: int, master_port: int | None = None) -> list[dict[str, str]]:
    """The variables torchrun would give each local rank (none for a single process)."""
    if world_size == 1:
        return [{}]
    port = str(master_port or free_port())
    return [
        {
            "RANK": str(rank), "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": LOCALHOST, "MASTER_PORT": port,
        }
        for rank in range(world_size)
    ]


@dataclass(frozen=True)
class ChildExit:
    """How the processes ended: 0, or the code of the rank that failed first (negative: its signal)."""

    returncode: int
    rank: int = 0


class TrainingProcesses:
    """The processes of one attempt (one, or one per rank), their report pipe, and their end."""

    def __init__(self, processes: list[asyncio.subprocess.Process], report_fd: int,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.processes = processes
        self.grace_s = grace_s
        self._report_fd = report_fd
        self._signalled: set[int] = set()  # ranks this object asked to stop
        # Each rank's peak resident memory, polled: a rank the OOM killer took is gone
        # before anyone can ask it.
        self.peak_memory: dict[int, int] = {}
        self._exit = asyncio.ensure_future(self._wait_all())
        self._memory_watch = asyncio.ensure_future(self._watch_memory())
        self._exit.add_done_callback(lambda _: self._memory_watch.cancel())

    @property
    def world_size(self) -> int:
        return len(self.processes)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    @classmethod
    async def start(cls, job_path: Path, world_size: int, env: Mapping[str, str], log_file: IO[bytes],
                    grace_s: float = DEFAULT_GRACE_S, master_port: int | None = None) -> "TrainingProcesses":
        """Start `python -m services.trainer.child JOB --report-fd N` once per rank.

        Every rank may write reports to N (rank 0 all of them, the others only
        their failure); stdout and stderr of all ranks go to `log_file`."""
        base_env = {k: v for k, v in env.items() if k not in RENDEZVOUS_VARIABLES}
        read_fd, write_fd = os.pipe()
        processes: list[asyncio.subprocess.Process] = []
        try:
            for rank_env in rank_environments(world_size, master_port):
                processes.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", CHILD_MODULE, str(job_path), "--report-fd", str(write_fd),
                    pass_fds=(write_fd,), stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    # The child dies with this process (services/trainer/lifeline.py).
                    env={**base_env, **rank_env, TRAINER_PID_VARIABLE: str(os.getpid())},
                ))
        except BaseException:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        return cls(processes, read_fd, grace_s)

    async def report_lines(self) -> AsyncIterator[bytes]:
        """The report pipe's lines, until every rank has closed it (exited)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=REPORT_LINE_LIMIT)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self._report_fd, "rb")
        )
        try:
            async for line in reader:
                yield line
        finally:
            transport.close()

    async def wait(self) -> ChildExit:
        """Wait until every rank has exited."""
        return await asyncio.shield(self._exit)

    async def terminate(self) -> None:
        """SIGTERM every rank still running; SIGKILL those left after the grace time."""
        running = [(rank, p) for rank, p in enumerate(self.processes) if p.returncode is None]
        for rank, process in running:
            self._signalled.add(rank)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for _, p in running)), timeout=self.grace_s)
        except TimeoutError:
            for _, process in running:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for _, p in running))

    async def _watch_memory(self) -> None:
        while True:
            self._poll_memory()
            await asyncio.sleep(MEMORY_POLL_S)

    def _poll_memory(self) -> None:
        for rank, process in enumerate(self.processes):
            peak = peak_memory_bytes(process.pid) if process.returncode is None else None
            if peak is not None:
                self.peak_memory[rank] = max(peak, self.peak_memory.get(rank, 0))

    async def _wait_all(self) -> ChildExit:
        waits = {asyncio.ensure_future(p.wait()): rank for rank, p in enumerate(self.processes)}
        failed: ChildExit | None = None
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=waits.__getitem__):
                rank, code = waits[task], task.result()
                # A rank killed by a signal nobody here sent (the OOM killer, say) is
                # the cause; the others then fail in their collectives.
                root_cause = code < 0 and rank not in self._signalled
                if code != 0 and (failed is None or (root_cause and failed.returncode > 0)):
                    failed = ChildExit(code, rank)
            if failed is not None and pending:
                # The survivors would block in their next collective: stop them now.
                # `terminate` itself waits for them, so this loop only collects their codes.
                await self.terminate()
        return failed or ChildExit(0)



def killed_by_signal_message(ended: ChildExit, world_size: int, peak_memory: int | None) -> str:
    """Why an attempt's training process died of a signal nobody here sent, for the run's history."""
    who = "training process" if world_size == 1 else f"training process of rank {ended.rank} (of {world_size})"
    message = f"{who} {ended_how(ended.returncode)}"
    if -ended.returncode == signal.SIGKILL:
        message += "; signal 9 is often the kernel's out-of-memory killer (see `dmesg` on the trainer's machine)"
    if peak_memory is not None:
        message += f"; its peak memory was at least {peak_memory / 2**20:.0f} MiB (polled every {MEMORY_POLL_S:g} s)"
    return message

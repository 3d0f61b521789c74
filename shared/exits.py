"""How a process ended, in words: one phrasing for the supervisor's log and the runs' history."""

import signal


def describe_signal(returncode: int) -> str:
    """'signal 9 (SIGKILL)' for a return code of -9."""
    number = -returncode
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def describe_exit(returncode: int) -> str:
    """'killed by signal 9 (SIGKILL)' for -9, 'exited with code 1' for 1."""
    return f"killed by {describe_signal(returncode)}" if returncode < 0 else f"exited with code {returncode}"


def ended_how(returncode: int) -> str:
    """describe_exit after a subject: 'was killed by signal 9 (SIGKILL)', 'exited with code 1'."""
    return ("was " if returncode < 0 else "") + describe_exit(returncode)

"""Pure ASHA (asynchronous successive halving, stopping variant, as Determined runs it).

A trial reaching a rung is compared with the trials that reached that rung before it:
it continues only if it ranks within the top max(1, n // eta) of those n (itself
included); otherwise it stops there. The decision is taken once, on arrival, so it
never waits for slower trials; recomputed from the stored arrivals it is the same.
"""

from dataclasses import dataclass
from datetime import datetime

from shared.sweeps import better


@dataclass(frozen=True)
class RungArrival:
    run_id: str
    value: float | None  # None: the metric was undefined; ranks below every value
    at: datetime


@dataclass(frozen=True)
class Decision:
    proceed: bool
    rank: int  # 0 is the best
    arrived: int  # trials at the rung up to and including this one
    keep: int  # how many of them continue


def _ahead(direction: str, other: RungArrival, this: RungArrival) -> bool:
    """Whether `other` ranks above `this`: a better value, or an equal one that came first."""
    if other.value is None:
        return this.value is None and (other.at, other.run_id) < (this.at, this.run_id)
    if this.value is None or better(direction, other.value, this.value):
        return True
    return other.value == this.value and (other.at, other.run_id) < (this.at, this.run_id)


def decide(arrivals: list[RungArrival], run_id: str, eta: int, direction: str) -> Decision:
    """The decision for `run_id` among the arrivals stored at its rung."""
    this = next(a for a in arrivals if a.run_id == run_id)
    earlier = [a for a in arrivals if (a.at, a.run_id) <= (this.at, this.run_id)]
    rank = sum(1 for a in earlier if a.run_id != run_id and _ahead(direction, a, this))
    keep = max(1, len(earlier) // eta)
    return Decision(proceed=rank < keep, rank=rank, arrived=len(earlier), keep=keep)

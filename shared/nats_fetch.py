"""nats-py's pull `fetch` raises only the timeout its documentation names.

nats-py 2.15 (nats-io/nats.py#934, the fix for an orphaned lingering pull
request) added exits from `PullSubscription.fetch` that raise a bare
`asyncio.TimeoutError` when the deadline runs out between its no-wait probe
and its lingering request, where it documents (and used to raise)
`nats.errors.TimeoutError`. FastStream's pull loop suppresses only the latter
(`faststream/nats/subscriber/usecases/stream_pull_subscriber.py`), so an idle
durable subscriber now and then died with a traceback its task supervisor
logged at ERROR before restarting it: a healthy trainer started with one.
nats-io/nats.py#1008 (open) raises `FetchTimeoutError` (a
`nats.errors.TimeoutError`) there; until it is released this does the same,
around the method, once per process.
"""

import functools
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.js.errors import FetchTimeoutError

_MARK = "_raises_only_nats_timeouts"


def raise_only_nats_timeouts() -> None:
    """Make `PullSubscription.fetch` raise FetchTimeoutError for a bare asyncio.TimeoutError."""
    pull = JetStreamContext.PullSubscription
    fetch = pull.fetch
    if getattr(fetch, _MARK, False):
        return

    @functools.wraps(fetch)
    async def fetch_raising_nats_timeouts(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fetch(self, *args, **kwargs)
        except NatsTimeoutError:
            raise
        except TimeoutError as error:  # asyncio.TimeoutError is the builtin since Python 3.11
            raise FetchTimeoutError from error

    setattr(fetch_raising_nats_timeouts, _MARK, True)
    pull.fetch = fetch_raising_nats_timeouts  # type: ignore[method-assign]

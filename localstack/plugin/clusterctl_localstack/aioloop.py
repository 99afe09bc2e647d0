"""One asyncio event loop in a daemon thread of the LocalStack process: readiness probes of nodes,
target health checks and the load balancers' TCP forwarders all run on it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            lp = asyncio.new_event_loop()
            t = threading.Thread(target=lp.run_forever, name="clusterctl-realizer-loop", daemon=True)
            t.start()
            _loop = lp
        return _loop


def submit(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
    """Schedules the coroutine on the loop (from any other thread)."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
    """Runs the coroutine on the loop and waits for its result (never call this from the loop)."""
    return submit(coro).result(timeout)

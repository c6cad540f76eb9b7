"""Two measured fixes for the serving tail (`make bench`, 32 clients, one record a request).

1. Garbage collection. A worker holds a few million objects (BentoML, scikit-learn, pandas, the
   model); a full collection walks them all and stalls every request in flight for ~100-200 ms.
   `gc.freeze()` after a model is loaded moves what exists into a generation the collector skips,
   and higher thresholds make collections rarer (a request allocates thousands of short-lived
   dicts, freed by reference counting anyway). Measured on one server, three 10-s runs each: p99
   157-198 ms untuned; 34-103 ms with freeze; 26-37 ms with both.
2. Worker balance. BentoML's HTTP workers share one listening socket, and an asyncio server
   accepts up to `backlog` (2,048) pending connections in one wake-up: a burst of clients lands
   mostly on the worker that woke first (28-30 of 32 seen), which stays overloaded while the other
   idles (p50 2 ms on one run, 35 ms on the next). `balance_http_workers()` makes each wake-up
   accept one connection: both workers wait on the socket, so the one not busy takes the next.
   Tried first: a SO_REUSEPORT socket per worker (the kernel hashes connections over them). It
   balances as well, but blindly: a restarted worker's socket takes its share of new connections
   before the worker can accept them, a 1.6-s pause for every client after a worker crash, where the
   shared socket lets the other worker answer throughout (tests/integration/test_reliability.py).
"""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path
from typing import Any

GC_THRESHOLDS = (20_000, 20, 50)  # default (700, 10, 10)
ACCEPTS_PER_WAKEUP = 1  # asyncio: `backlog` (uvicorn passes 2,048)
ACCEPT_PAUSE_S = 0.0005  # after an accept, per connection the worker already serves
ACCEPT_PAUSE_MAX_S = 0.005


def tune_gc() -> None:
    """Rarer collections, and everything alive now (the model included) out of their reach. Run
    after each model change: what an earlier call froze (a model since replaced) is collected."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def balance_http_workers(argv: list[str] | None = None) -> bool:
    """In BentoML's HTTP worker (`python -m bentoml_cli.worker.http_api_server`), before its server
    starts: one accepted connection per event-loop wake-up. Any other process (the arbiter, a gRPC
    server with its own poller, a runner, a test importing the service) is left alone. Returns
    whether the patch is in place; idempotent."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).stem != "http_api_server":
        return False
    from asyncio import selector_events

    loop_class = selector_events.BaseSelectorEventLoop
    if getattr(loop_class, "_churn_balanced", False):
        return True
    original = loop_class._accept_connection

    @functools.wraps(original)
    def accept_one(
        self: Any,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *args: Any,
    ) -> None:
        original(self, protocol_factory, sock, sslcontext, server, ACCEPTS_PER_WAKEUP, *args)
        # Then stop listening for a moment, the longer the more connections this worker serves,
        # so that the other worker, woken by the same connection, takes the next one.
        fd = sock.fileno()
        serving = getattr(server, "_active_count", 0)
        if fd < 0 or not self._remove_reader(fd):
            return

        def resume() -> None:
            if sock.fileno() == fd and (server is None or server.is_serving()):
                self._add_reader(
                    fd, self._accept_connection, protocol_factory, sock, sslcontext, server, backlog, *args
                )

        self.call_later(min(ACCEPT_PAUSE_S * (serving + 1), ACCEPT_PAUSE_MAX_S), resume)

    loop_class._accept_connection = accept_one
    loop_class._churn_balanced = True
    return True

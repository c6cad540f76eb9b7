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

import gc

GC_THRESHOLDS = (20_000, 20, 50)  # default (700, 10, 10)
ACCEPTS_PER_WAKEUP = 1  # asyncio: `backlog` (uvicorn passes 2,048)


def tune_gc() -> None:
    """Rarer collections, and everything alive now (the model included) out of their reach."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def balance_http_workers() -> None:
    """In an HTTP worker, before its server starts: one accepted connection per event-loop wake-up.
    Idempotent; the gRPC server (grpc's own poller) is not concerned."""
    from asyncio import selector_events

    loop = selector_events.BaseSelectorEventLoop
    if getattr(loop, "_churn_balanced", False):
        return
    original = loop._accept_connection

    def accept_one(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args):
        original(self, protocol_factory, sock, sslcontext, server, min(backlog, ACCEPTS_PER_WAKEUP), *args)

    loop._accept_connection = accept_one
    loop._churn_balanced = True

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
   It relies on private asyncio internals, so it checks them first and stays out when they differ
   (another Python, uvloop), and it is on only where there is something to balance: two or more
   API workers (HTTP_ACCEPT_BALANCING). The server logs, and `churn_http_accept_balancing` says,
   whether it is on.
"""

from __future__ import annotations

import functools
import gc
import inspect
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Balancing:
    """Whether balance_http_workers() is in place in this process, and why (or why not)."""

    active: bool
    reason: str


# What the patch replaces and calls, as CPython 3.11 and 3.12 have them. Anything else (another
# Python, another event loop) and the patch stays out.
_ACCEPT_PARAMS = (
    "self",
    "protocol_factory",
    "sock",
    "sslcontext",
    "server",
    "backlog",
    "ssl_handshake_timeout",
    "ssl_shutdown_timeout",
)
_state = Balancing(False, "not an HTTP API worker")


def _internals_differ() -> str | None:
    """Why the asyncio internals the patch relies on are not what it was written for, or None."""
    from asyncio import base_events, selector_events

    loop_class = selector_events.BaseSelectorEventLoop
    try:
        params = tuple(inspect.signature(loop_class._accept_connection).parameters)
    except (AttributeError, TypeError, ValueError):
        return "asyncio's selector loop has no _accept_connection"
    if params != _ACCEPT_PARAMS:
        return f"_accept_connection{params} is not the signature it was written for"
    for name, args in (
        ("_add_reader", ("self", "fd", "callback", "args")),
        ("_remove_reader", ("self", "fd")),
    ):
        method = getattr(loop_class, name, None)
        if method is None or tuple(inspect.signature(method).parameters) != args:
            return f"asyncio's selector loop has no {name}{args}"
    # The count of connections a server serves (3.13 has none): the pause grows with it.
    if "_active_count" not in base_events.Server.__init__.__code__.co_names:
        return "asyncio.Server keeps no _active_count"
    return None


def balance_http_workers(mode: str, workers: int, argv: list[str] | None = None) -> Balancing:
    """In BentoML's HTTP worker (`python -m bentoml_cli.worker.http_api_server`), before its server
    starts: one accepted connection per event-loop wake-up, then a pause. `mode` is the
    HTTP_ACCEPT_BALANCING setting: "auto" balances when there are two API workers or more (with one,
    the pause is pure added latency), "on" always, "off" never. Any other process (the arbiter, a
    gRPC server with its own poller, a runner, a test importing the service) is left alone, and so
    is an asyncio whose internals are not what the patch expects. Idempotent."""
    global _state
    argv = sys.argv if argv is None else argv
    _unpatch()
    if not argv or Path(argv[0]).stem != "http_api_server":
        _state = Balancing(False, "not an HTTP API worker")
    elif mode == "off":
        _state = Balancing(False, "HTTP_ACCEPT_BALANCING=off")
    elif mode == "auto" and workers < 2:
        _state = Balancing(False, f"{workers} API worker: nothing to balance (HTTP_ACCEPT_BALANCING=auto)")
    elif (why := _internals_differ()) is not None:
        _state = Balancing(False, f"{why} (Python {sys.version.split()[0]})")
    else:
        _patch()
        _state = Balancing(True, f"{workers} API worker(s), HTTP_ACCEPT_BALANCING={mode}")
    return _state


def check_http_balancing(loop: Any) -> Balancing:
    """In the running server: the patch acts only on asyncio's own selector loop (uvloop, for one,
    accepts in C and never calls it). On another loop it is removed, and said so."""
    global _state
    from asyncio import selector_events

    if _state.active and not isinstance(loop, selector_events.BaseSelectorEventLoop):
        _unpatch()
        _state = Balancing(False, f"the event loop is {type(loop).__module__}.{type(loop).__name__}")
    return _state


def _unpatch() -> None:
    from asyncio import selector_events

    loop_class = selector_events.BaseSelectorEventLoop
    original = getattr(loop_class, "_churn_original_accept", None)
    if original is not None:
        loop_class._accept_connection = original
        del loop_class._churn_original_accept


def _patch() -> None:
    from asyncio import selector_events

    loop_class = selector_events.BaseSelectorEventLoop
    if getattr(loop_class, "_churn_original_accept", None) is not None:
        return
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

    loop_class._churn_original_accept = original
    loop_class._accept_connection = accept_one

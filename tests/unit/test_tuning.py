"""churn/tuning.py's accept balancing patches private asyncio internals: it must be on only where
it has something to balance, off when told, and stay out (saying why) when the internals or the
event loop are not the ones it was written for."""

from __future__ import annotations

import asyncio
from asyncio import selector_events

import pytest

from churn import tuning

WORKER = ["/venv/lib/python3.11/site-packages/bentoml_cli/worker/http_api_server.py"]
LOOP = selector_events.BaseSelectorEventLoop


@pytest.fixture(autouse=True)
def unpatched():
    original = LOOP._accept_connection
    yield
    tuning._unpatch()
    assert LOOP._accept_connection is original


def patched() -> bool:
    return getattr(LOOP, "_churn_original_accept", None) is not None


@pytest.mark.parametrize(
    ("mode", "workers", "argv", "active", "reason"),
    [
        ("auto", 2, WORKER, True, "2 API worker(s)"),
        ("auto", 1, WORKER, False, "nothing to balance"),
        ("on", 1, WORKER, True, "HTTP_ACCEPT_BALANCING=on"),
        ("off", 4, WORKER, False, "HTTP_ACCEPT_BALANCING=off"),
        ("auto", 2, ["/venv/bin/bentoml"], False, "not an HTTP API worker"),
    ],
)
def test_balancing_is_on_only_where_it_has_work(mode, workers, argv, active, reason):
    state = tuning.balance_http_workers(mode, workers, argv)
    assert state.active is active and reason in state.reason
    assert patched() is active


def test_other_asyncio_internals_leave_it_out(monkeypatch):
    def accept(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, context=None):
        pass  # a signature it was not written for

    monkeypatch.setattr(LOOP, "_accept_connection", accept)
    state = tuning.balance_http_workers("auto", 2, WORKER)
    assert not state.active and "not the signature" in state.reason and not patched()
    monkeypatch.undo()
    # an asyncio.Server that keeps no count of its connections (Python 3.13)
    monkeypatch.setattr(asyncio.base_events.Server, "__init__", lambda self, *a, **k: None)
    state = tuning.balance_http_workers("auto", 2, WORKER)
    assert not state.active and "_active_count" in state.reason and not patched()


def test_another_event_loop_removes_it():
    class UvloopLike:  # uvloop accepts in C and never calls asyncio's _accept_connection
        pass

    assert tuning.balance_http_workers("auto", 2, WORKER).active and patched()
    state = tuning.check_http_balancing(UvloopLike())
    assert not state.active and "UvloopLike" in state.reason and not patched()


def test_asyncio_own_loop_keeps_it():
    assert tuning.balance_http_workers("auto", 2, WORKER).active
    loop = asyncio.new_event_loop()
    try:
        assert tuning.check_http_balancing(loop).active and patched()
    finally:
        loop.close()

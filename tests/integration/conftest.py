"""Session fixtures hosting real servers: one trained MLOPS_HOME shared by an HTTP and a gRPC
server, each a real `bentoml serve` / `bentoml serve-grpc` on a free loopback port."""

from __future__ import annotations

import pytest

from tests.support import Server, train


@pytest.fixture(scope="session")
def served_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("served")
    summary = train(home)
    return home, summary


@pytest.fixture(scope="session")
def http_server(served_home, tmp_path_factory):
    home, _ = served_home
    # Two API workers, set explicitly: test_tail.py measures how connections spread over both.
    server = Server("http", home, tmp_path_factory.mktemp("logs"), workers=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpc_server(served_home, tmp_path_factory):
    home, _ = served_home
    server = Server("grpc", home, tmp_path_factory.mktemp("logs")).start()
    yield server
    server.stop()

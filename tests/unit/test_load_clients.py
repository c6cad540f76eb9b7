"""The load tests' own client loop must lose no failure: against a server that sometimes answers
garbage or hangs up, every exception is counted and every client thread lives to the end."""

from __future__ import annotations

import socket
import threading
import time

from tests.support import LoadClients, http


class FlakyServer(threading.Thread):
    """Answers 200, a garbage status line, or hangs up, in turn: what a crashing server does."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.n = 0

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.n += 1
                if self.n % 3 == 0:
                    conn.sendall(b"garbage\r\n\r\n")
                elif self.n % 3 == 1:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                # else: hang up without an answer


def test_every_exception_is_a_failure_and_every_client_lives():
    server = FlakyServer()
    server.start()
    url = f"http://127.0.0.1:{server.port}/predict"
    load = LoadClients(4, lambda i, n: http("POST", url, {"instances": []}, timeout=5)[0]).start()
    time.sleep(1.0)
    alive = [t.is_alive() for t in load.threads]
    load.stop(10)
    server.sock.close()
    failed = [str(s) for s in load.failures]
    # every client lived until it was stopped, so it kept sending
    assert alive == [True] * 4 and server.n >= 12, (alive, server.n)
    load.check()
    # a third of the answers were garbage: each one counted (a request in flight at the stop aside)
    assert failed.count("BadStatusLine") >= server.n // 3 - 4, sorted(set(failed))
    hangups = failed.count("RemoteDisconnected") + failed.count("ConnectionResetError")
    assert hangups >= server.n // 3 - 4, sorted(set(failed))
    assert len(load.results) >= server.n - 4, (len(load.results), server.n)


def test_check_refuses_a_client_that_fell_silent():
    load = LoadClients(3, lambda i, n: time.sleep(0.5 if i == 0 else 0.01) or 200).run(1.0)
    try:
        load.check()
    except AssertionError as exc:
        assert "less than its share" in str(exc)
    else:
        raise AssertionError(f"check() passed a client that sent {load.sent}")

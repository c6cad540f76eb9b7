"""Test instrumentation, mounted into the e2e containers only (PYTHONPATH): every Python process
records that it started (so the test knows which processes were watched), then each name lookup
and outgoing connection, so the test can prove that nothing of ours reaches outside the pod.
Python's audit hooks see every socket the standard library opens, including failed attempts,
which a packet capture would miss."""

import json
import os
import sys

_LOG = os.environ.get("CHURN_NET_AUDIT")
_EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname"}


def _write(entry):
    try:
        with open(_LOG, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
    except Exception:  # never disturb the program under test
        pass


def _hook(event, args):
    if event not in _EVENTS:
        return
    try:
        sock = event in ("socket.connect", "socket.sendto", "socket.sendmsg")
        target = args[1] if sock else args[0]
        family = str(getattr(args[0], "family", None)) if sock else None
        _write({"pid": os.getpid(), "event": event, "target": repr(target), "family": family})
    except Exception:
        pass


if _LOG:
    _write({"pid": os.getpid(), "event": "process.start", "target": " ".join(sys.orig_argv), "family": None})
    sys.addaudithook(_hook)

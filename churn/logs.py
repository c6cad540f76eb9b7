"""Application logging: a stream (stderr for CLIs, stdout for the service) plus a rotating file
under `$MLOPS_HOME/logs/`, both at LOG_LEVEL."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
from typing import TextIO

from churn.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(settings: Settings, program: str, stream: TextIO = sys.stderr) -> logging.Logger:
    logger = logging.getLogger("churn")
    logger.setLevel(settings.log_level)
    logger.propagate = False
    if getattr(logger, "_churn_configured", False):
        return logger
    formatter = logging.Formatter(FORMAT)
    console = logging.StreamHandler(stream)
    console.setFormatter(formatter)
    logger.addHandler(console)
    # One file per program and host: pods share the volume, and two writers rotating one file
    # would clobber each other.
    path = settings.logs_dir / f"{program}-{socket.gethostname()}.log"
    try:
        os.makedirs(settings.logs_dir, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    except OSError as exc:
        logger.warning("log folder %s not writable (%s): logging to the console only", settings.logs_dir, exc)
    logger._churn_configured = True  # type: ignore[attr-defined]
    return logger

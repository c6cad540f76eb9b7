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
# Per file; with the backups, at most (1 + LOG_BACKUPS) x LOG_MAX_BYTES per process.
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3


def log_file_name(program: str) -> str:
    """One file per program, host and process. Pods share the volume, and the API workers of one
    pod share a host name: two processes rotating one file would rename it under each other."""
    return f"{program}-{socket.gethostname()}-{os.getpid()}.log"


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
    path = settings.logs_dir / log_file_name(program)
    try:
        os.makedirs(settings.logs_dir, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    except OSError as exc:
        logger.warning("log folder %s not writable (%s): logging to the console only", settings.logs_dir, exc)
    logger._churn_configured = True  # type: ignore[attr-defined]
    return logger

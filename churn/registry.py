"""The model registry: `$MLOPS_HOME/registry.json`.

It names the current model (the one the API serves) and keeps an append-only history of every
registration, promotion and rollback. Every change happens under an exclusive file lock and is
written to a temporary file that is renamed over the old one, so readers (the servers poll it
without locking) only ever see a complete file, and a writer killed at any point leaves either the
old or the new registry, never a mix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
# Champion/challenger gate of `--promote auto`: a new model may be this much worse (ROC AUC) and
# still replace the current one; it absorbs the noise between two trainings on the same data.
AUTO_PROMOTE_TOLERANCE = 0.005


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (unknown tag, nothing to roll back to, bad file)."""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _empty(model_name: str) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "model_name": model_name,
        "current": None,
        "versions": {},
        "history": [],
    }


def read_registry(path: Path, model_name: str) -> dict[str, Any]:
    """The registry's content (an empty one if the file does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _empty(model_name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise RegistryError(f"{path}: not a registry file of format {FORMAT_VERSION}")
    return data


def current_tag(path: Path, model_name: str) -> str | None:
    """The tag the API must serve, or None. Lock-free: the file is only ever replaced whole."""
    return read_registry(path, model_name).get("current")


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def current_stack(history: list[dict[str, Any]]) -> list[str]:
    """The chain of current models: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for event in history:
        if event["action"] == "promote" and (not stack or stack[-1] != event["tag"]):
            stack.append(event["tag"])
        elif event["action"] == "rollback" and len(stack) > 1:
            stack.pop()
    return stack


class Registry:
    def __init__(self, path: Path, model_name: str):
        self.path = Path(path)
        self.model_name = model_name
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> dict[str, Any]:
        return read_registry(self.path, self.model_name)

    def current(self) -> str | None:
        return self.read().get("current")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict[str, Any]]:
        """Hold the lock, hand out the content, write it back atomically if the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                # Only the lock holder writes temporary files: any present now are a killed writer's.
                for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                    stale.unlink(missing_ok=True)
                data = self.read()
                yield data
                _atomic_write(self.path, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _event(data: dict[str, Any], action: str, tag: str, reason: str) -> dict[str, Any]:
        event = {
            "time": utc_now(),
            "action": action,
            "tag": tag,
            "previous": data["current"],
            "reason": reason,
        }
        data["history"].append(event)
        if action in ("promote", "rollback"):
            data["current"] = tag
        return event

    def register(self, tag: str, info: dict[str, Any], promote: str = "auto") -> tuple[bool, str]:
        """Record a new version and apply the promotion policy. Returns (promoted, reason)."""
        if promote not in ("auto", "always", "never"):
            raise ValueError(f"promote must be auto, always or never, not {promote!r}")
        with self._transaction() as data:
            if tag in data["versions"]:
                raise RegistryError(f"{tag} is already registered")
            data["versions"][tag] = info
            self._event(data, "register", tag, "trained")
            promoted, reason = self._decide(data, tag, info, promote)
            if promoted:
                self._event(data, "promote", tag, reason)
        return promoted, reason

    def _decide(self, data: dict[str, Any], tag: str, info: dict[str, Any], promote: str) -> tuple[bool, str]:
        if promote == "always":
            return True, "--promote always"
        if promote == "never":
            return False, "--promote never"
        current = data["current"]
        if current is None:
            return True, "auto: no current model"
        new_auc = float(info["metrics"]["roc_auc"])
        cur_auc = float(data["versions"].get(current, {}).get("metrics", {}).get("roc_auc", float("-inf")))
        if new_auc >= cur_auc - AUTO_PROMOTE_TOLERANCE:
            return True, f"auto: roc_auc {new_auc:.4f} >= current {cur_auc:.4f} - {AUTO_PROMOTE_TOLERANCE}"
        return False, f"auto: roc_auc {new_auc:.4f} < current {cur_auc:.4f} - {AUTO_PROMOTE_TOLERANCE}"

    def promote(self, tag: str, reason: str = "manual promote") -> dict[str, Any]:
        with self._transaction() as data:
            if tag not in data["versions"]:
                raise RegistryError(f"{tag} is not a registered version of {self.model_name}")
            return self._event(data, "promote", tag, reason)

    def rollback(self, reason: str = "manual rollback") -> dict[str, Any]:
        with self._transaction() as data:
            stack = current_stack(data["history"])
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: no previous current model in the history")
            return self._event(data, "rollback", stack[-2], reason)

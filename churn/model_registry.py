"""The model registry: `$MLOPS_HOME/registry.json`.

It names the current model (the one the API serves) and keeps an append-only history of every
registration, promotion and rollback. Every change happens under an exclusive file lock and is
written to a temporary file that is renamed over the old one, so readers (the servers poll it
without locking) only ever see a complete file, and a writer killed at any point leaves either the
old or the new registry, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from churn.utctime import utc_now

FORMAT_VERSION = 1
CANDIDATE_MODES = ("shadow", "canary")
DEFAULT_CANARY_FRACTION = 0.1


class VersionEntry(TypedDict):
    """One registered version (the registry's copy of what a training run measured)."""

    created: str
    metrics: dict[str, float]
    threshold: float
    data_sha256: str
    # How it was trained and judged: set by training.retrain (evaluation window, gate decision).
    evaluation: NotRequired[dict[str, Any]]


class SequentialDesign(TypedDict):
    """How training.decide judges a candidate, fixed when it is staged (churn.gate)."""

    method: str
    alpha: float
    auc_margin: float
    log_loss_margin: float
    tau_auc: float
    tau_log_loss: float
    min_class_count: int


class Candidate(TypedDict):
    """A version staged beside the current one: shadow (scored, never answered) or canary."""

    tag: str
    mode: Literal["shadow", "canary"]
    fraction: float  # share of customers a canary answers; 0.0 in shadow mode
    staged_at: str
    # The sequential test that decides it; absent in registries written before it existed.
    design: NotRequired[SequentialDesign]


class HistoryEvent(TypedDict):
    time: str
    # conflict: a promote or unstage refused because the registry changed since its comparison
    action: Literal["register", "promote", "rollback", "stage", "unstage", "conflict"]
    tag: str
    previous: str | None  # the current model before the event
    reason: str
    details: NotRequired[dict[str, Any]]


class RegistryData(TypedDict):
    format: int
    model_name: str
    current: str | None
    candidate: NotRequired[Candidate | None]
    versions: dict[str, VersionEntry]
    history: list[HistoryEvent]


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (unknown tag, nothing to roll back to, bad file)."""


def _empty(model_name: str) -> RegistryData:
    return {
        "format": FORMAT_VERSION,
        "model_name": model_name,
        "current": None,
        "candidate": None,
        "versions": {},
        "history": [],
    }


def read_registry(path: Path, model_name: str) -> RegistryData:
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


def _atomic_write(path: Path, data: RegistryData) -> None:
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


def current_stack(history: list[HistoryEvent]) -> list[str]:
    """The chain of current models: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for event in history:
        if event["action"] == "promote" and (not stack or stack[-1] != event["tag"]):
            stack.append(event["tag"])
        elif event["action"] == "rollback" and len(stack) > 1:
            stack.pop()
    return stack


ANY: Any = object()  # "do not check" for the compare-and-swap arguments below


def _staged(candidate: Candidate | None) -> tuple[str, str] | None:
    return None if candidate is None else (candidate["tag"], candidate["staged_at"])


class Registry:
    """Every change is a compare-and-swap where it matters: `promote`, `register` and `unstage`
    take what the caller compared against (`if_current`, `if_candidate`); if the registry no
    longer holds it (a rollback, a manual promote or a new stage since), nothing changes but a
    `conflict` event that says so."""

    def __init__(self, path: Path, model_name: str):
        self.path = Path(path)
        self.model_name = model_name
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def read(self) -> RegistryData:
        return read_registry(self.path, self.model_name)

    def current(self) -> str | None:
        return self.read().get("current")

    def candidate(self) -> Candidate | None:
        return self.read().get("candidate")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[RegistryData]:
        """Hold the lock, hand out the content, write it back atomically if the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                # Only the lock holder writes temporary files: any present now are a killed writer's.
                for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                    stale.unlink(missing_ok=True)
                data = self.read()
                data.setdefault("candidate", None)
                yield data
                _atomic_write(self.path, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _event(
        data: RegistryData, action: str, tag: str, reason: str, details: dict[str, Any] | None = None
    ) -> HistoryEvent:
        event: HistoryEvent = {
            "time": utc_now(),
            "action": action,  # type: ignore[typeddict-item]
            "tag": tag,
            "previous": data["current"],
            "reason": reason,
        }
        if details:
            event["details"] = details
        data["history"].append(event)
        if action in ("promote", "rollback"):
            data["current"] = tag
            candidate = data.get("candidate")
            if candidate is not None and candidate["tag"] == tag:
                data["candidate"] = None  # the candidate became current: its stage is over
        return event

    @staticmethod
    def _conflict(
        data: RegistryData, action: str, tag: str, if_current: Any, if_candidate: Any
    ) -> HistoryEvent | None:
        """A `conflict` event if the registry changed since the caller compared, else None."""
        found = []
        if if_current is not ANY and data["current"] != if_current:
            found.append(f"the current model is {data['current']}, not {if_current} as compared against")
        now = _staged(data.get("candidate"))
        if if_candidate is not ANY and now != _staged(if_candidate):
            what = f"{now[0]} (staged {now[1]})" if now else "none"
            found.append(f"the candidate is {what}, not the one compared")
        if not found:
            return None
        return Registry._event(
            data, "conflict", tag, f"{action} refused: " + "; ".join(found), {"refused": action}
        )

    def register(
        self,
        tag: str,
        info: VersionEntry,
        decision: tuple[bool, str] = (False, "registered only"),
        details: dict[str, Any] | None = None,
        if_current: Any = ANY,
    ) -> tuple[bool, str]:
        """Record a new version and apply `decision` (promoted, reason), which the caller took
        (churn.promotion) against `if_current`: promoted only if that is still current. `details`
        go into the register event. Returns (promoted, reason)."""
        with self._transaction() as data:
            if tag in data["versions"]:
                raise RegistryError(f"{tag} is already registered")
            data["versions"][tag] = info
            self._event(data, "register", tag, "trained", details)
            promoted, reason = decision
            if promoted:
                conflict = self._conflict(data, "promote", tag, if_current, ANY)
                if conflict is not None:
                    return False, conflict["reason"]
                self._event(data, "promote", tag, reason)
        return promoted, reason

    def _require(self, data: RegistryData, tag: str) -> None:
        if tag not in data["versions"]:
            raise RegistryError(f"{tag} is not a registered version of {self.model_name}")

    def promote(
        self,
        tag: str,
        reason: str = "manual promote",
        details: dict[str, Any] | None = None,
        if_current: Any = ANY,
        if_candidate: Any = ANY,
    ) -> HistoryEvent:
        """Make `tag` current; with `if_current` / `if_candidate`, only if the registry still holds
        them (else the returned event is a `conflict`)."""
        with self._transaction() as data:
            self._require(data, tag)
            conflict = self._conflict(data, "promote", tag, if_current, if_candidate)
            return conflict or self._event(data, "promote", tag, reason, details)

    def rollback(self, reason: str = "manual rollback") -> HistoryEvent:
        with self._transaction() as data:
            stack = current_stack(data["history"])
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: no previous current model in the history")
            return self._event(data, "rollback", stack[-2], reason)

    def stage(
        self,
        tag: str,
        mode: str,
        fraction: float | None = None,
        reason: str = "manual stage",
        design: SequentialDesign | None = None,
    ) -> HistoryEvent:
        """Make `tag` the candidate. Canary: `fraction` of customers (default 0.1); shadow: none.
        `design`: the sequential test that will decide it, kept with it."""
        if mode not in CANDIDATE_MODES:
            raise RegistryError(f"mode must be one of {', '.join(CANDIDATE_MODES)}, not {mode!r}")
        if mode == "shadow" and fraction is not None:
            raise RegistryError("--fraction applies to canary only: a shadow answers no customer")
        share = DEFAULT_CANARY_FRACTION if fraction is None else float(fraction)
        if mode == "canary" and not 0.0 < share <= 1.0:
            raise RegistryError(f"fraction must be in (0, 1], got {fraction}")
        with self._transaction() as data:
            self._require(data, tag)
            if tag == data["current"]:
                raise RegistryError(f"{tag} is already the current model")
            candidate: Candidate = {
                "tag": tag,
                "mode": mode,  # type: ignore[typeddict-item]
                "fraction": share if mode == "canary" else 0.0,
                "staged_at": utc_now(),
            }
            if design is not None:
                candidate["design"] = design
            data["candidate"] = candidate
            details: dict[str, Any] = {"mode": mode, "fraction": candidate["fraction"]}
            if design is not None:
                details["design"] = design
            return self._event(data, "stage", tag, reason, details)

    def unstage(
        self,
        reason: str = "manual unstage",
        details: dict[str, Any] | None = None,
        if_current: Any = ANY,
        if_candidate: Any = ANY,
    ) -> HistoryEvent:
        """No candidate any more; with `if_current` / `if_candidate`, only if the registry still
        holds them (else the returned event is a `conflict`)."""
        with self._transaction() as data:
            candidate = data.get("candidate")
            if candidate is None and if_candidate is ANY:
                raise RegistryError("no candidate is staged")
            conflict = self._conflict(
                data, "unstage", candidate["tag"] if candidate else "-", if_current, if_candidate
            )
            if conflict is not None:
                return conflict
            assert candidate is not None
            data["candidate"] = None
            return self._event(
                data, "unstage", candidate["tag"], reason, {"mode": candidate["mode"]} | (details or {})
            )

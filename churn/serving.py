"""Serving logic, kept out of service.py so that another serving API would only replace that file.

- ModelHolder lives in the runner: it loads the registry's current model (and a staged candidate),
  re-reads the registry every RELOAD_INTERVAL_SECONDS and swaps models atomically (hot reload),
  scores requests (routing a canary's share of customers to the candidate), and reports its status
  for the health routes.
- The holder hands every prediction to its PredictionLog (churn.predictionlog), which writes it
  off the response's path and scores a shadow candidate there.

What a response looks like is churn.contract; the gauges copied from the monitoring reports,
churn.metrics.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from churn.explain import Explained, explain_scored, score_and_explain
from churn.holdout import holdout_mask
from churn.metrics import ServingMetrics
from churn.model import LoadedModel, ModelUnavailable, load_model, warm_imports
from churn.model_registry import Candidate, RegistryError, read_registry
from churn.settings import Settings
from churn.tuning import tune_gc

if TYPE_CHECKING:
    from churn.predictionlog import PredictionLog

log = logging.getLogger("churn.serving")


@dataclass(frozen=True)
class Serving:
    """What a server holds at one moment. Replaced whole, so a request sees one consistent pair."""

    current: LoadedModel | None = None
    candidate: LoadedModel | None = None
    mode: Literal["shadow", "canary"] | None = None
    fraction: float = 0.0


@dataclass(frozen=True)
class ScoreResult:
    """The runner's answer for one request, in input order. `models[0]` is the current model;
    `model_index[i]` says which version scored record i (None: all of them models[0])."""

    probabilities: np.ndarray
    churn: np.ndarray  # each record against the threshold of the version that scored it
    models: tuple[str, ...]
    model_index: np.ndarray | None = None
    error: str | None = None  # no model loaded: why
    explained: Explained | None = None  # reasons, when the request asked for them (churn/explain.py)
    holdout: np.ndarray | None = None  # records whose customer is held out: "no action" (churn.holdout)

    @property
    def model(self) -> str | None:
        """The version that computed every record, or None when the records were split."""
        if not self.models:
            return None
        if self.model_index is None:
            return self.models[0]
        used = np.unique(self.model_index)
        return self.models[int(used[0])] if len(used) == 1 else None

    def record_models(self) -> list[str]:
        if self.model_index is None:
            return [self.models[0]] * len(self.probabilities)
        return [self.models[i] for i in self.model_index.tolist()]


def canary_share(key: str, salt: str) -> float:
    """A stable position in [0, 1) for a customer: the same key and salt always give the same one."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class HolderStatus:
    """What the health routes and /model report."""

    loaded: bool
    model: str | None
    registry_current: str | None
    error: str | None
    details: dict[str, Any] | None
    candidate: dict[str, Any] | None = field(default=None)


class ModelHolder:
    """The models a runner serves, swapped in place when the registry changes.

    The poll thread runs `refresh()` once per reload interval. A worker that holds no model also
    refreshes when a request or probe finds the registry file changed since its last look (a
    `stat`, no read): so every worker serves a first model, or a rollback away from a broken one,
    as soon as the registry names it. Never more often: a model that fails to load costs one
    attempt per interval (or per registry change), not one per request.
    """

    def __init__(
        self,
        settings: Settings,
        prediction_log: PredictionLog | None = None,
        metrics: ServingMetrics | None = None,
    ):
        self.settings = settings
        self.prediction_log = prediction_log
        self.metrics = metrics
        self._reports_seen: dict[str, Any] = {}
        self._serving = Serving()
        self._wanted: str | None = None
        self._wanted_candidate: Candidate | None = None
        self._error: str | None = "not checked yet"
        self._candidate_error: str | None = None
        self._registry_seen: tuple[int, int, int] | None = None  # (inode, size, mtime) last read
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> Serving:
        return self._serving

    def _load(self, tag: str, held: Serving) -> LoadedModel:
        for model in (held.current, held.candidate):
            if model is not None and model.tag == tag:
                return model  # a promoted candidate is already in memory
        log.info("loading %s", tag)
        return load_model(self.settings, tag)

    def refresh(self) -> None:
        """Look at the registry once; load what it names if it is not what is held."""
        with self._refresh_lock:
            self._registry_seen = self._registry_signature()
            try:
                data = read_registry(self.settings.registry_path, self.settings.model_name)
            except (RegistryError, OSError) as exc:
                self._set_error(f"registry unreadable: {exc}")
                return
            held = self._serving
            wanted, staged = data["current"], data.get("candidate")
            self._wanted, self._wanted_candidate = wanted, staged
            current = held.current
            if wanted is None:
                error = None if current else f"no current model in the registry {self.settings.registry_path}"
            elif current is not None and current.tag == wanted:
                error = None
            else:
                try:
                    current = self._load(wanted, held)
                    error = None
                except ModelUnavailable as exc:
                    # A server that holds a good model keeps serving it; the reason stays visible.
                    error = str(exc)
            candidate, self._candidate_error = self._candidate_for(staged, current, held)
            serving = Serving(
                current=current,
                candidate=candidate,
                mode=staged["mode"] if candidate is not None and staged else None,
                fraction=float(staged["fraction"]) if candidate is not None and staged else 0.0,
            )
            models_changed = serving.current is not held.current or serving.candidate is not held.candidate
            if serving != held:
                self._serving = serving  # one reference assignment: in-flight requests keep theirs
                self._log_change(held, serving)
            self._set_error(error)
            if self.metrics is not None:
                self._publish(held, serving)
            if models_changed:
                del held  # so that the model it held can be collected, not frozen
                tune_gc()  # the new model joins what the collector no longer walks (churn/tuning.py)

    def _publish(self, old: Serving, new: Serving) -> None:
        """The model gauges, and the latest monitoring reports' gauges, after every check."""
        m = self.metrics
        assert m is not None
        m.model_loaded.set(int(new.current is not None))
        if old.current is not None and (new.current is None or old.current.tag != new.current.tag):
            m.model_info.labels(model=old.current.tag).set(0)
        if new.current is not None:
            m.model_info.labels(model=new.current.tag).set(1)
        if old.candidate is not None and (old.candidate, old.mode) != (new.candidate, new.mode):
            m.candidate_info.labels(model=old.candidate.tag, mode=old.mode).set(0)
        if new.candidate is not None:
            m.candidate_info.labels(model=new.candidate.tag, mode=new.mode).set(1)
        m.publish_reports(
            self.settings.latest_drift_report, self.settings.latest_performance_report, self._reports_seen
        )

    def _registry_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.settings.registry_path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _refresh_if_registry_changed(self) -> None:
        """With no model held: refresh now if the registry was rewritten since the last look
        (the registry is replaced whole, so a new inode). Skipped if a refresh is running."""
        if self._registry_signature() == self._registry_seen or not self._refresh_lock.acquire(
            blocking=False
        ):
            return
        self._refresh_lock.release()
        try:
            self.refresh()
        except Exception:
            log.exception("model refresh failed")

    def _candidate_for(
        self, staged: Candidate | None, current: LoadedModel | None, held: Serving
    ) -> tuple[LoadedModel | None, str | None]:
        if staged is None or current is None or staged["tag"] == current.tag:
            return None, None
        try:
            return self._load(staged["tag"], held), None
        except ModelUnavailable as exc:
            # A candidate that cannot load changes no response: the current model serves alone.
            return None, str(exc)

    @staticmethod
    def _log_change(old: Serving, new: Serving) -> None:
        def tag(m: LoadedModel | None) -> str:
            return m.tag if m else "none"

        if tag(old.current) != tag(new.current):
            log.info("serving %s (was %s)", tag(new.current), tag(old.current))
        if (tag(old.candidate), old.mode, old.fraction) != (tag(new.candidate), new.mode, new.fraction):
            log.info("candidate %s (%s, fraction %s)", tag(new.candidate), new.mode, new.fraction)

    def _set_error(self, error: str | None) -> None:
        if error != self._error and error is not None:
            log.warning("model status: %s", error)
        self._error = error

    def start(self) -> None:
        """First load now (so a ready runner has its model), then poll in a daemon thread."""
        try:
            warm_imports()
            self.refresh()
        except Exception:  # never let the runner's __init__ fail: BentoML would restart it in a loop
            log.exception("first model load failed")
        self._thread = threading.Thread(target=self._poll, name="churn-model-reload", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_seconds):
            try:
                self.refresh()
            except Exception:
                log.exception("model refresh failed")

    def stop(self) -> None:
        self._stop.set()
        if self.prediction_log is not None:
            self.prediction_log.close()

    def status(self) -> HolderStatus:
        if self._serving.current is None:
            self._refresh_if_registry_changed()
        serving = self._serving
        model = serving.current
        candidate = None
        if self._wanted_candidate is not None:
            candidate = {
                "model": self._wanted_candidate["tag"],
                "mode": self._wanted_candidate["mode"],
                "fraction": self._wanted_candidate["fraction"],
                "loaded": serving.candidate is not None,
                "error": self._candidate_error,
            }
        return HolderStatus(
            loaded=model is not None,
            model=model.tag if model else None,
            registry_current=self._wanted,
            error=self._error,
            details=model.describe() if model else None,
            candidate=candidate,
        )

    def score(
        self, records: list[dict[str, Any]], ids: list[Any], request_id: str, explain: int | None = None
    ) -> ScoreResult:
        if self._serving.current is None:
            self._refresh_if_registry_changed()
        serving = self._serving  # read once: the whole request sees one pair of models
        current = serving.current
        if current is None:
            empty = np.empty(0)
            return ScoreResult(empty, empty.astype(bool), (), error=self._error or "no model loaded yet")
        if serving.candidate is not None and serving.mode == "canary":
            result = self._score_canary(serving, records, ids, request_id)
        elif explain is not None and current.reasons is not None:  # one pass for both (churn/explain.py)
            proba, explained = score_and_explain(current, records, explain)
            result = ScoreResult(proba, proba >= current.threshold, (current.tag,), explained=explained)
        else:
            proba, churn = current.scored(records)
            result = ScoreResult(proba, churn, (current.tag,))
        if explain is not None and result.explained is None:
            models = (current,) if result.model_index is None else (current, serving.candidate)
            result = replace(result, explained=explain_scored(models, result.model_index, records, explain))
            if result.explained.refused:  # answered with a 4xx: neither counted nor logged
                return result
        if self.settings.holdout_fraction > 0:
            result = replace(result, holdout=holdout_mask(ids, self.settings.holdout_fraction))
        if self.metrics is not None:
            self._count(result)
        if self.prediction_log is not None:
            shadow = serving.candidate if serving.mode == "shadow" else None
            self.prediction_log.append(request_id, result, records, ids, shadow)
        return result

    def _count(self, result: ScoreResult) -> None:
        counter = self.metrics.predictions  # type: ignore[union-attr]
        index = result.model_index
        for i, tag in enumerate(result.models):
            churn = result.churn if index is None else result.churn[index == i]
            churned = int(churn.sum())
            if churned:
                counter.labels(outcome="churn", model=tag).inc(churned)
            if len(churn) - churned:
                counter.labels(outcome="no_churn", model=tag).inc(len(churn) - churned)

    def _score_canary(
        self, serving: Serving, records: list[dict[str, Any]], ids: list[Any], request_id: str
    ) -> ScoreResult:
        current, candidate = serving.current, serving.candidate
        assert current is not None and candidate is not None
        # The candidate's tag salts the hash: each canary draws its own customers, and a customer
        # keeps their version for the whole canary. Records without an ID follow the request.
        to_candidate = np.fromiter(
            (
                canary_share(str(cid) if cid is not None else f"request:{request_id}", candidate.tag)
                < serving.fraction
                for cid in ids
            ),
            dtype=bool,
            count=len(ids),
        )
        proba = np.empty(len(records))
        churn = np.empty(len(records), dtype=bool)
        for model, mask in ((current, ~to_candidate), (candidate, to_candidate)):
            if mask.any():
                idx = np.flatnonzero(mask)
                p, c = model.scored([records[i] for i in idx])
                proba[idx], churn[idx] = p, c
        return ScoreResult(proba, churn, (current.tag, candidate.tag), to_candidate.astype(np.int8))

"""Retraining on the base data plus the outcomes that came back: the evaluation window held out,
the challenger fitted as churn.fitting fits, champion and challenger judged on the same window rows
by churn.gate, and promoted or staged per churn.promotion (the logic of `python -m training.retrain`)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.fitting import TrainingResult, fit, save_and_register, sha256_of
from churn.gate import GateResult, compare_paired, sequential_design
from churn.model import ModelUnavailable, load_membership, load_model, trained_on
from churn.model_registry import Registry, RegistryError
from churn.outcomes import LabelledExample, iter_examples, untreated_examples
from churn.promotion import promotion
from churn.schema import FEATURE_NAMES, ValidatedData, read_customers_csv, records_to_frame
from churn.settings import Settings
from churn.utctime import parse_time

EVAL_FRACTION = 0.3


@dataclass(frozen=True)
class RetrainOptions:
    """What `python -m training.retrain` was asked to do, checked."""

    data: Path
    min_labels: int
    promote: str
    seed: int
    stage: str | None
    fraction: float | None


def split_examples(
    examples: list[LabelledExample], seed: int
) -> tuple[list[LabelledExample], list[LabelledExample]]:
    """(training part, evaluation window): the window is the newest EVAL_FRACTION by observed_at,
    ties in an order drawn from `seed`; the training part holds none of the window's customers."""
    rng = random.Random(seed)
    keyed = [(parse_time(e["observed_at"]), rng.random(), e) for e in examples]
    keyed.sort(key=lambda k: (k[0], k[1]))
    size = max(1, round(len(keyed) * EVAL_FRACTION))
    window = [e for *_, e in keyed[-size:]]
    held = {e["customerID"] for e in window}
    return [e for *_, e in keyed[:-size] if e["customerID"] not in held], window


def examples_frame(examples: list[LabelledExample]) -> tuple[pd.DataFrame, np.ndarray]:
    """The examples' features (as the service scored them) and outcomes."""
    records = [{k: e["prediction"]["record"][k] for k in FEATURE_NAMES} for e in examples]  # type: ignore[index]
    return records_to_frame(records), np.array([int(e["churn"]) for e in examples])


def training_data(
    base: ValidatedData, train_part: list[LabelledExample], window: list[LabelledExample]
) -> ValidatedData:
    """Base rows (minus the window's customers) and the training part's examples."""
    held = {e["customerID"] for e in window}
    keep = np.ones(len(base.features), dtype=bool) if base.ids is None else ~base.ids.isin(held).to_numpy()
    frames, labels = [base.features[keep]], [base.label.to_numpy()[keep]]
    ids = [base.ids[keep] if base.ids is not None else pd.Series([None] * int(keep.sum()))]
    if train_part:
        X, y = examples_frame(train_part)
        frames.append(X[list(FEATURE_NAMES)])
        labels.append(y)
        ids.append(pd.Series([e["customerID"] for e in train_part]))
    features = pd.concat(frames, ignore_index=True)
    for name in features.columns:
        features[name] = features[name].astype(base.features[name].dtype)
    notes = [*base.notes, f"{int((~keep).sum())} base row(s) of evaluation-window customers left out"]
    return ValidatedData(
        features=features,
        label=pd.Series(np.concatenate(labels)),
        ids=pd.concat(ids, ignore_index=True),
        notes=notes,
    )


@dataclass(frozen=True)
class JudgedWindow:
    """The evaluation window's outcomes the champion may be judged on: those of customers it was
    fitted on left out (issue 20.4)."""

    compared: list[LabelledExample]
    y: np.ndarray
    excluded_trained_on: int
    membership_unknown: bool
    treatment: dict[str, int]  # churn.outcomes.untreated_examples' counts

    def churners(self) -> int:
        return int(self.y.sum())

    def left_out(self) -> dict[str, Any]:
        """What the evaluation records of the outcomes left out."""
        return {
            "excluded_trained_on": self.excluded_trained_on,
            "membership_unknown": self.membership_unknown,
            "treatment": self.treatment,
        }


def _skipped(reason: str, log) -> dict[str, Any]:
    log.info(reason)
    return {"tag": None, "promoted": False, "skipped": True, "reason": reason, "evaluation": None}


def _comparable_window(
    settings: Settings, champion_tag: str, window: list[LabelledExample], treatment: dict[str, int]
) -> JudgedWindow:
    champion_members = load_membership(settings, champion_tag)
    known = trained_on(champion_members, [e["customerID"] for e in window])
    compared = [e for e, k in zip(window, known, strict=True) if not k]
    y = np.array([int(e["churn"]) for e in compared])
    return JudgedWindow(compared, y, int(known.sum()), champion_members is None, treatment)


def _train_challenger(
    options: RetrainOptions,
    base: ValidatedData,
    train_part: list[LabelledExample],
    window: list[LabelledExample],
    log,
) -> tuple[ValidatedData, TrainingResult]:
    """Fit as churn.fitting fits a first model, on the base data and the training part; the provenance names
    the outcomes it learned from."""
    feedback_sha = hashlib.sha256(json.dumps([e["customerID"] for e in train_part]).encode()).hexdigest()
    data = training_data(base, train_part, window)
    result = fit(
        data,
        {
            "file": options.data.name,
            "sha256": sha256_of(options.data),
            "labelled_examples": len(train_part),
            "feedback_sha256": feedback_sha,
            "evaluation_window": len(window),
        },
        options.seed,
        log,
    )
    return data, result


def _gate_on_window(
    settings: Settings, champion_tag: str, result: TrainingResult, judged: JudgedWindow, minimum: int
) -> GateResult:
    """Champion and challenger scored on the same window rows."""
    try:
        champion = load_model(settings, champion_tag)
    except ModelUnavailable as exc:
        raise RegistryError(f"the current model cannot be loaded to compare with: {exc}") from None
    X_window, _ = examples_frame(judged.compared)
    return compare_paired(
        judged.y,
        champion.predict_proba(X_window),
        result.pipeline.predict_proba(X_window[list(FEATURE_NAMES)])[:, 1],
        (champion_tag, "challenger"),
        (champion.threshold, result.threshold),
        min_class_count=minimum,
    )


def _evaluation(
    gate: GateResult, judged: JudgedWindow, window: list[LabelledExample], data: ValidatedData, labelled: int
) -> dict[str, Any]:
    """What the registry records of the comparison: both models' metrics, what was left out of
    the window, the window's span and what the challenger was trained on."""
    return (
        gate.as_dict()
        | judged.left_out()
        | {
            "window": {"from": window[0]["observed_at"], "to": window[-1]["observed_at"]},
            "trained_on": {"base_rows": int(len(data.features) - labelled), "labelled": labelled},
        }
    )


def _stage_challenger(
    registry: Registry, options: RetrainOptions, tag: str, gate: GateResult, minimum: int
) -> dict[str, Any]:
    registry.stage(
        tag,
        options.stage,
        options.fraction,
        f"training.retrain --stage: {gate.reason}",
        sequential_design(minimum),
    )
    return {"mode": options.stage, "fraction": registry.candidate()["fraction"]}  # type: ignore[index]


def retrain(settings: Settings, options: RetrainOptions, log) -> dict[str, Any]:
    registry = Registry(settings.registry_path, settings.model_name)
    champion_tag = registry.current()
    if champion_tag is None:
        raise RegistryError(
            "no current model to compare with: train the first one (python -m training.train)"
        )
    # Only outcomes free of our own actions (churn.holdout): saved customers coming back as "No"
    # would teach the challenger to rank them lower.
    examples, treatment = untreated_examples(
        [e for e in iter_examples(settings) if e["prediction"] is not None], settings.holdout_fraction > 0
    )
    if len(examples) < options.min_labels:
        return _skipped(
            f"only {len(examples)} labelled example(s) (untreated outcomes joined with a prediction; "
            f"{treatment}); --min-labels is {options.min_labels}: nothing to learn from yet",
            log,
        )
    base = read_customers_csv(str(options.data), require_label=True)
    train_part, window = split_examples(examples, options.seed)
    # The champion is not judged on customers it was fitted on (issue 20.4); the challenger never
    # trains on the window's customers at all.
    judged = _comparable_window(settings, champion_tag, window, treatment)
    n, churners, minimum = len(judged.compared), judged.churners(), settings.gate_min_class_count
    if min(churners, n - churners) < minimum:
        return _skipped(
            f"the evaluation window's {n} outcomes ({judged.excluded_trained_on} of "
            f"customers the current model was trained on left out) hold {churners} churner(s) and "
            f"{n - churners} non-churner(s); the gate needs {minimum} of each "
            "(GATE_MIN_CLASS_COUNT): no comparison possible yet",
            log,
        )
    log.info(
        "%d labelled examples: %d to train on, %d in the evaluation window (%s to %s)",
        len(examples),
        len(train_part),
        len(window),
        window[0]["observed_at"],
        window[-1]["observed_at"],
    )
    data, result = _train_challenger(options, base, train_part, window, log)
    gate = _gate_on_window(settings, champion_tag, result, judged, minimum)
    log.info("gate on the evaluation window: %s", gate.reason)
    evaluation = _evaluation(gate, judged, window, data, len(train_part))
    decision = promotion(champion_tag, gate, options.promote, options.stage)
    # Promoted only if the champion is still current (a rollback meanwhile stands): else a conflict.
    summary = save_and_register(settings, result, log, decision, evaluation, if_current=decision.champion)
    evaluation["challenger"]["tag"] = summary["tag"]
    staged = None
    if options.stage and decision.decision != "reject":
        staged = _stage_challenger(registry, options, summary["tag"], gate, minimum)
    return {
        "tag": summary["tag"],
        "promoted": summary["promoted"],
        "skipped": False,
        "reason": summary["reason"],
        "staged": staged,
        "current": summary["current"],
        "evaluation": {"n": n} | evaluation,
    }

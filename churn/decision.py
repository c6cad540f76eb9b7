"""Judging a staged candidate against the current model on the outcomes since it was staged
(paired for shadow, unpaired for canary) by the sequential test recorded with it, and promoting or
unstaging it only if the registry still holds the pair compared (the logic of
`python -m training.decide`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from churn.gate import (
    GateResult,
    SequentialDesign,
    TooFewOutcomes,
    compare_paired,
    compare_unpaired,
    sequential_design,
)
from churn.model import load_membership, trained_on
from churn.model_registry import Registry
from churn.outcomes import LabelledExample, iter_examples, untreated_examples
from churn.promotion import promotion
from churn.settings import Settings
from churn.utctime import parse_time


@dataclass(frozen=True)
class Evidence:
    """The outcomes the gate may judge on: predictions made since the candidate was staged, left
    out those of treated customers and of customers either version was fitted on."""

    examples: list[LabelledExample]
    treatment: dict[str, int]
    excluded: int  # trained on by either version
    unknown: list[str]  # versions whose training membership is not stored

    def left_out(self) -> str:
        return f"{self.excluded} trained on by either version left out" + (
            f"; training membership unknown for {', '.join(self.unknown)}" if self.unknown else ""
        )


@dataclass(frozen=True)
class Sides:
    """Each version's outcomes. Shadow pairs them, so both sides are the same records (scored by
    both); canary splits them by the version that answered."""

    paired: bool
    current: list[LabelledExample]
    candidate: list[LabelledExample]

    def sizes(self) -> tuple[int, int]:
        return len(self.current), len(self.candidate)


def _evidence(settings: Settings, versions: tuple[str, str], since: datetime) -> Evidence:
    examples = [
        e for e in iter_examples(settings) if e["prediction"] and parse_time(e["prediction"]["time"]) >= since
    ]
    # Only outcomes free of our own actions (churn.holdout), and never of customers either
    # version was fitted on (issue 20.4).
    examples, treatment = untreated_examples(examples, settings.holdout_fraction > 0)
    learned = [load_membership(settings, t) for t in versions]
    seen = trained_on(learned[0], [e["customerID"] for e in examples])
    seen |= trained_on(learned[1], [e["customerID"] for e in examples])
    examples = [e for e, known in zip(examples, seen, strict=True) if not known]
    unknown = [t for t, m in zip(versions, learned, strict=True) if m is None]
    return Evidence(examples, treatment, int(seen.sum()), unknown)


def _sides(examples: list[LabelledExample], mode: str, versions: tuple[str, str]) -> Sides:
    current, tag = versions
    if mode == "shadow":
        rows = [
            e
            for e in examples
            if e["prediction"]["model"] == current
            and (e["prediction"].get("shadow") or {}).get("model") == tag
        ]
        return Sides(True, rows, rows)
    mine = {t: [e for e in examples if e["prediction"]["model"] == t] for t in versions}
    return Sides(False, mine[current], mine[tag])


def _compare_sides(
    sides: Sides, versions: tuple[str, str], thresholds: tuple[float, float], design: SequentialDesign
) -> GateResult:
    """The gate's verdict; raises TooFewOutcomes while a side lacks a class."""
    if sides.paired:
        rows = sides.current
        return compare_paired(
            np.array([int(e["churn"]) for e in rows]),
            np.array([e["prediction"]["churn_probability"] for e in rows]),
            np.array([e["prediction"]["shadow"]["churn_probability"] for e in rows]),
            versions,
            thresholds,
            design=design,
        )
    return compare_unpaired(
        *(
            (
                np.array([int(e["churn"]) for e in side]),
                np.array([e["prediction"]["churn_probability"] for e in side]),
            )
            for side in (sides.current, sides.candidate)
        ),
        versions,
        thresholds,
        design=design,
    )


def _act(
    registry: Registry,
    candidate: dict[str, Any],
    current: str,
    gate: GateResult,
    reason: str,
    evaluation: dict[str, Any],
) -> tuple[str, str]:
    """Promote, unstage or wait as the policy says; the decision and reason, "conflict" when the
    registry no longer holds the pair that was compared."""
    tag, mode = candidate["tag"], candidate["mode"]
    # A compare-and-swap: only if the registry still holds the pair that was compared.
    compared = {"if_current": current, "if_candidate": candidate}
    verdict = promotion(current, gate).decision
    if verdict == "promote":
        event = registry.promote(
            tag, f"training.decide: {mode} candidate better: {reason}", evaluation, **compared
        )
        decision = "promote"
    elif verdict == "reject":
        event = registry.unstage(f"training.decide: {mode} candidate worse: {reason}", evaluation, **compared)
        decision = "unstage"
    else:
        event, decision = None, "wait"
    if event is not None and event["action"] == "conflict":
        decision, reason = "conflict", f"{event['reason']}; nothing changed (was: {decision}, {reason})"
    return decision, reason


def decide(settings: Settings, min_labels: int, log) -> dict[str, Any]:
    registry = Registry(settings.registry_path, settings.model_name)
    data = registry.read()
    current, candidate = data["current"], data.get("candidate")
    if candidate is None or current is None:
        return {
            "candidate": None,
            "mode": None,
            "decision": "none",
            "reason": "no candidate is staged",
            "evaluation": None,
        }
    tag, mode = candidate["tag"], candidate["mode"]
    versions = (current, tag)
    design = candidate.get("design")
    if design is None:  # staged before designs were recorded: today's design, said so
        design = sequential_design(settings.gate_min_class_count)
        log.info("candidate %s was staged without a recorded design: using %s", tag, design)
    thresholds = (float(data["versions"][current]["threshold"]), float(data["versions"][tag]["threshold"]))
    evidence = _evidence(settings, versions, parse_time(candidate["staged_at"]))
    sides = _sides(evidence.examples, mode, versions)
    sizes = sides.sizes()
    out = {"candidate": tag, "mode": mode, "evaluation": None}
    if min(sizes) < min_labels:
        reason = (
            f"outcomes since the candidate was staged: {sizes[0]} for {current}, {sizes[1]} for {tag} "
            f"({evidence.left_out()}); each side needs {min_labels}"
        )
        return out | {"decision": "wait", "reason": reason}
    try:
        gate = _compare_sides(sides, versions, thresholds, design)
    except TooFewOutcomes as exc:  # too few of a class on a side: nothing to compare yet
        return out | {"decision": "wait", "reason": str(exc)}
    evaluation = gate.as_dict() | {
        "excluded_trained_on": evidence.excluded,
        "membership_unknown": evidence.unknown,
        "treatment": evidence.treatment,
    }
    decision, reason = _act(
        registry, candidate, current, gate, f"{gate.reason} ({evidence.left_out()})", evaluation
    )
    log.info("candidate %s (%s): %s (%s)", tag, mode, decision, reason)
    return out | {"decision": decision, "reason": reason, "evaluation": evaluation}

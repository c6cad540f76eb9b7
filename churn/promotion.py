"""The promotion policy: when a new model may become the current one. One rule for training.train,
training.retrain and training.decide:

- no current model: the new one becomes current (the first training, the cluster's first Job);
- a current model (champion): it is replaced only on the gate's "promote" (churn.gate), a
  significant ROC AUC gain over its margin with non-inferior log loss, on outcomes neither model
  was trained on. A run without such a comparison (training.train: each run's test split is its
  own, other rows than the champion's) keeps the champion and only registers the new version.

`--promote always|never` are the operator's override, said so in the reason. A comparison of test
ROC AUCs with a tolerance (the rule training.train used to have) accepts a model that is worse by
up to the tolerance: a regression promoted by construction, which the gate's margin exists to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the gate needs scipy; a first training does not
    from churn.gate import GateResult

Override = Literal["auto", "always", "never"]
OVERRIDES: tuple[Override, ...] = ("auto", "always", "never")


@dataclass(frozen=True)
class Promotion:
    """What the policy decided about a challenger: promote it, keep the champion (not shown better,
    nor worse; a staged candidate waits), or reject it (shown worse). The figures it decided on are
    the gate's (GateResult), which the callers record as the evaluation; the reason quotes them."""

    decision: Literal["promote", "keep", "reject"]
    reason: str
    champion: str | None  # the current model it was judged against: promote only if still current

    @property
    def promote(self) -> bool:
        return self.decision == "promote"


def promotion(
    champion: str | None,
    gate: GateResult | None = None,
    override: Override = "auto",
    stage: str | None = None,
) -> Promotion:
    """The decision about a challenger, given the current model (`champion`) and the gate's verdict
    on outcomes (None: no comparison). `stage` (shadow|canary): the challenger is to be staged, not
    promoted; "keep" then means stage it, "reject" do not."""
    if override not in OVERRIDES:
        raise ValueError(f"promote must be one of {', '.join(OVERRIDES)}, not {override!r}")
    said = "no comparison on outcomes" if gate is None else f"{gate.decision} ({gate.reason})"
    verdict = said if gate is None else f"gate: {said}"
    if stage is not None:
        decision = "reject" if gate is not None and gate.decision == "reject" else "keep"
        return Promotion(decision, f"--stage {stage}: {said}", champion)
    if override != "auto":
        decision = "promote" if override == "always" else "keep"
        return Promotion(decision, f"--promote {override}; {verdict}", champion)
    if champion is None:
        return Promotion("promote", "auto: no current model, the first one becomes current", None)
    if gate is None:
        return Promotion(
            "keep",
            f"auto: {champion} is current and stays: replacing it takes the gate on outcomes neither "
            "model was trained on, which this run has not (training.retrain compares on them; or stage "
            "this version, python -m training.registry stage TAG --mode shadow|canary, and "
            "training.decide judges it; or promote it by hand)",
            champion,
        )
    decision = "keep" if gate.decision == "undecided" else gate.decision
    return Promotion(decision, verdict, champion)

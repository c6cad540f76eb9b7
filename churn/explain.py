"""Why a customer is at risk: each feature's exact share of the model's logit.

For the pipeline churn.fastpath verifies (log1p and scaling of the numbers, one-hot categories,
logistic regression) the logit is linear in the transformed columns x: z = b + w.x. Relative to a
baseline, the logit at the training reference's mean in that space (b + w.mean(x_ref)), column j
adds w_j (x_j - mean_j); a feature's one-hot columns are summed into the feature. These are the
SHAP values of a linear model under feature independence (shap's LinearExplainer with the
reference as background gives the same, tests/unit/test_explain.py), and baseline + contributions
= z exactly: checked against the pipeline's own decision_function (to 1e-9) when a model loads.
Any other model is refused with the reason, never approximated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pandas as pd

from churn.fastpath import CATEGORY_INDEX, TOLERANCE, Columns, FastScorer, records_to_columns
from churn.schema import FEATURE_NAMES, FEATURES, FieldError, RecordValidationError

if TYPE_CHECKING:
    from churn.model import LoadedModel

EXPLAIN_FIELD = "explain"
ALL = "all"
N_FEATURES = len(FEATURE_NAMES)
SLOTS = 1 + max(len(f.categories) for f in FEATURES) + 1  # a number, each category, an unknown one
# Up to this many records, reasons are computed in plain Python: numpy's per-call cost (about 80 us
# for one record) would be most of a small request's time.
SMALL_REQUEST = 8


class ExplainRefused(ValueError):
    """The model's reasons cannot be computed exactly; the message says why."""


class Reason(TypedDict):
    feature: str
    value: Any
    contribution: float


class LinearReasons:
    """Per-feature contributions of a verified linear pipeline, relative to its reference mean."""

    def __init__(self, fast: FastScorer, reference: pd.DataFrame):
        num = dict(zip(fast.num_names, fast.num_weights, strict=True))
        # A contribution is slope * value + offset, with value log1p(x) for a number and the
        # category's weight for a category: offset = -slope * the reference's mean of that value.
        self._numeric: list[tuple[int, str, float, float]] = []
        self._categorical: list[tuple[int, str, np.ndarray]] = []
        baseline = fast.intercept
        for j, feature in enumerate(FEATURES):
            name = feature.name
            if feature.is_categorical:
                weights = fast.code_weights[name]
                table = dict(fast.cat_weights)[name]
                mean = float(np.mean([table.get(v, 0.0) for v in reference[name].tolist()]))
                self._categorical.append((j, name, weights - mean))
            else:
                slope = num[name]
                mean = float(np.mean(np.log1p(reference[name].to_numpy(dtype=np.float64))))
                self._numeric.append((j, name, slope, -slope * mean))
                mean *= slope
            baseline += mean
        self.baseline = float(baseline)
        # A category's reason is the same for every customer: built once, shared by the answers
        # (a request's reasons are only serialised). Slot SLOTS * j + code + 1; 0 is a number's.
        self._categorical_lists = [(j, name, centred.tolist()) for j, name, centred in self._categorical]
        self._shared: list[Reason | None] = [None] * (SLOTS * N_FEATURES)
        for j, name, centred in self._categorical:
            for code, category in enumerate(FEATURES[j].categories):
                self._shared[SLOTS * j + code + 1] = {
                    "feature": name,
                    "value": category,
                    "contribution": float(centred[code]),
                }

    @classmethod
    def for_pipeline(
        cls, pipeline: Any, reference: pd.DataFrame, fast: FastScorer | None = None
    ) -> LinearReasons:
        """Reasons for `pipeline`, checked additive against its own decision_function on the
        reference; ExplainRefused (with the reason) for any other model."""
        try:
            fast = fast or FastScorer(pipeline)
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise ExplainRefused(f"not the pipeline shape the fast path knows: {exc}") from None
        reasons = cls(fast, reference)
        sample = reference.head(2000)
        logit = pipeline.decision_function(sample[list(FEATURE_NAMES)])
        got = reasons.baseline + reasons.contributions_records(sample.to_dict(orient="records")).sum(axis=1)
        if not np.allclose(got, logit, rtol=0, atol=TOLERANCE):
            raise ExplainRefused(
                f"baseline + contributions differ from the model's logit by {np.abs(got - logit).max():.1e}"
            )
        return reasons

    def contributions_columns(self, columns: Columns) -> np.ndarray:
        """(rows, 19) contributions, features in the schema's order."""
        out = np.empty((len(columns), N_FEATURES))
        for j, name, slope, offset in self._numeric:
            out[:, j] = slope * np.log1p(columns.numeric[name]) + offset
        for j, name, centred in self._categorical:
            out[:, j] = centred[columns.codes[name]]
        return out

    def contributions_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        return self.contributions_columns(records_to_columns(records))

    def _reasons_of(self, rec: dict[str, Any], k: int) -> list[Reason]:
        """One record's reasons in plain Python: what reasons_records computes with numpy."""
        shares = [0.0] * N_FEATURES
        slots = [0] * N_FEATURES
        for j, name, slope, offset in self._numeric:
            shares[j] = slope * math.log1p(rec[name]) + offset
        for j, name, centred in self._categorical_lists:
            code = CATEGORY_INDEX[name][rec[name]]
            shares[j] = centred[code]
            slots[j] = SLOTS * j + code + 1
        top = sorted(range(N_FEATURES), key=shares.__getitem__, reverse=True)[:k]  # stable, as argsort
        return [
            self._shared[slots[j]]
            or {"feature": FEATURE_NAMES[j], "value": rec[FEATURE_NAMES[j]], "contribution": shares[j]}
            for j in top
        ]

    def reasons_records(
        self, records: list[dict[str, Any]], k: int, columns: Columns | None = None
    ) -> list[list[Reason]]:
        """The k largest contributions of each record, largest first, as the API answers them
        (`columns`: the records as Columns, if the caller has them already)."""
        if len(records) <= SMALL_REQUEST and columns is None:
            return [self._reasons_of(rec, k) for rec in records]
        columns = columns or records_to_columns(records)
        contributions = self.contributions_columns(columns)
        top = top_reasons(contributions, k)
        shares = np.take_along_axis(contributions, top, axis=1).tolist()
        codes = np.full(contributions.shape, -1, dtype=np.intp)
        for j, name, _ in self._categorical:
            codes[:, j] = columns.codes[name]
        slots = (SLOTS * top + np.take_along_axis(codes, top, axis=1) + 1).tolist()
        shared, names = self._shared, FEATURE_NAMES
        return [
            [
                shared[slot] or {"feature": names[j], "value": rec[names[j]], "contribution": c}
                for slot, j, c in zip(row_slots, picks, row_shares, strict=True)
            ]
            for rec, row_slots, picks, row_shares in zip(records, slots, top.tolist(), shares, strict=True)
        ]


def top_reasons(contributions: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) feature indices of the k largest contributions of each row, largest first."""
    if k >= contributions.shape[1]:
        return np.argsort(-contributions, axis=1, kind="stable")
    part = np.argpartition(-contributions, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(contributions, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def parse_explain(value: Any) -> int:
    """The request's `explain`: 1 to 19 reasons (a whole number; 3.0 from a gRPC Struct too), or
    "all". Anything else is a RecordValidationError naming the field."""
    if value == ALL and isinstance(value, str):
        return N_FEATURES
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and float(value).is_integer()
        and 1 <= value <= N_FEATURES
    ):
        return int(value)
    raise RecordValidationError(
        [FieldError(f'must be a whole number from 1 to {N_FEATURES}, or "all"; got {value!r}', EXPLAIN_FIELD)]
    )


def split_explain(body: Any) -> tuple[Any, int | None]:
    """(the body without `explain`, the number of reasons asked for or None). A body without it
    comes back as it was, so its answer is what it was before reasons existed."""
    if not isinstance(body, dict) or EXPLAIN_FIELD not in body:
        return body, None
    k = parse_explain(body[EXPLAIN_FIELD])
    return {key: v for key, v in body.items() if key != EXPLAIN_FIELD}, k


@dataclass(frozen=True)
class Explained:
    """Reasons for the records of one request, in input order; or why there are none."""

    baselines: list[float]
    reasons: list[list[Reason]]
    refused: str | None = None

    def error_body(self) -> dict[str, Any]:
        return {"error": "explain_unavailable", "message": self.refused}

    def add_to(self, predictions: list[dict[str, Any]]) -> None:
        for prediction, reasons, baseline in zip(predictions, self.reasons, self.baselines, strict=True):
            prediction["reasons"] = reasons
            prediction["baseline"] = baseline


def score_and_explain(
    model: LoadedModel, records: list[dict[str, Any]], k: int
) -> tuple[np.ndarray, Explained]:
    """Probabilities and reasons from one pass over the records: the column-wise fast path (batch
    scoring's, equal to the pipeline to 1e-9) gives the probabilities, the same columns the reasons;
    a small request goes record by record. Only for a model with reasons."""
    explainer, fast = model.reasons, model.fast
    assert explainer is not None and fast is not None
    baselines = [explainer.baseline] * len(records)
    if len(records) <= SMALL_REQUEST:  # record by record: the answer without `explain`'s numbers
        return fast.predict_records(records), Explained(baselines, explainer.reasons_records(records, k))
    columns = records_to_columns(records)
    return fast.predict_columns(columns), Explained(baselines, explainer.reasons_records(records, k, columns))


def explain_scored(
    models: Sequence[LoadedModel], model_index: np.ndarray | None, records: list[dict[str, Any]], k: int
) -> Explained:
    """Reasons for scored records, each from the version that scored it (`model_index[i]` into
    `models`, or None: all by models[0])."""
    groups = (
        [(models[0], np.arange(len(records)))]
        if model_index is None
        else [(m, np.flatnonzero(model_index == i)) for i, m in enumerate(models)]
    )
    groups = [(m, idx) for m, idx in groups if len(idx)]
    for model, _ in groups:
        if model.reasons is None:
            why = f"model {model.tag} cannot be explained exactly ({model.reasons_refusal})"
            return Explained([], [], refused=why + "; ask without 'explain'")
    baselines: list[float] = [0.0] * len(records)
    reasons: list[list[Reason]] = [[] for _ in records]
    for model, idx in groups:
        explainer = model.reasons
        assert explainer is not None
        if len(idx) == len(records):
            reasons = explainer.reasons_records(records, k)
            baselines = [explainer.baseline] * len(records)
            continue
        for i, found in zip(
            idx.tolist(), explainer.reasons_records([records[i] for i in idx], k), strict=True
        ):
            reasons[i] = found
            baselines[i] = explainer.baseline
    return Explained(baselines, reasons)

"""A lean scoring path for the pipeline training builds (log1p + StandardScaler on the numeric
features, OneHotEncoder(handle_unknown="ignore") on the categorical ones, LogisticRegression).

Scoring a record through pandas and the ColumnTransformer costs ~4 ms, almost all of it overhead;
the arithmetic is a dot product. This module reads the fitted parameters once and scores JSON
records directly (a dict lookup per category, a log per number), or whole columns at once (batch
scoring: numpy arrays, a category as its index in the schema). It is used only after both ways
have reproduced the pipeline's own probabilities on the model's stored reference sample (to 1e-9);
any other pipeline shape falls back to the pipeline itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from churn.schema import CATEGORICAL_FEATURES, FEATURES_BY_NAME, NUMERIC_FEATURES

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Columns:
    """Records as columns: each numeric feature as float64, each categorical one as the index of its
    value in the schema's categories (len(categories) for a value the schema does not know)."""

    numeric: dict[str, np.ndarray]
    codes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.numeric.values())))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow: the same two formulas predict_records uses."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class FastScorer:
    def __init__(self, pipeline: Any):
        pre = pipeline.named_steps["preprocess"]
        clf = pipeline.named_steps["classifier"]
        transformers = {name: (est, cols) for name, est, cols in pre.transformers_}
        num_pipe, num_cols = transformers["num"]
        encoder, cat_cols = transformers["cat"]
        if list(num_cols) != list(NUMERIC_FEATURES) or list(cat_cols) != list(CATEGORICAL_FEATURES):
            raise ValueError("unexpected column layout")
        if [type(s).__name__ for _, s in num_pipe.steps] != ["FunctionTransformer", "StandardScaler"]:
            raise ValueError("unexpected numeric preprocessing")
        if num_pipe.steps[0][1].func is not np.log1p or encoder.handle_unknown != "ignore":
            raise ValueError("unexpected transformations")
        if type(clf).__name__ != "LogisticRegression" or clf.coef_.shape[0] != 1:
            raise ValueError("not a binary logistic regression")
        scaler = num_pipe.steps[1][1]
        coef = clf.coef_[0]
        n_num = len(NUMERIC_FEATURES)
        # w * (log1p(x) - mean) / scale = (w / scale) * log1p(x) - w * mean / scale
        self.num_weights = [float(w) for w in coef[:n_num] / scaler.scale_]
        self.intercept = float(clf.intercept_[0] - np.sum(coef[:n_num] * scaler.mean_ / scaler.scale_))
        offset = n_num
        self.cat_weights: list[tuple[str, dict[Any, float]]] = []
        for name, cats in zip(CATEGORICAL_FEATURES, encoder.categories_, strict=True):
            table = {}
            for i, cat in enumerate(cats):
                value = cat.item() if hasattr(cat, "item") else cat
                table[value] = float(coef[offset + i])
                if isinstance(value, int | float) and float(value).is_integer():
                    table[int(value)] = table[float(value)] = float(coef[offset + i])
            self.cat_weights.append((name, table))
            offset += len(cats)
        self.num_names = list(NUMERIC_FEATURES)
        # Per categorical feature: the weight of each schema category, then 0 for one it does not
        # know (what OneHotEncoder(handle_unknown="ignore") gives it).
        self.code_weights = {
            name: np.array([table.get(c, 0.0) for c in FEATURES_BY_NAME[name].categories] + [0.0])
            for name, table in self.cat_weights
        }

    def predict_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        out = np.empty(len(records))
        log1p, exp = math.log1p, math.exp
        num = list(zip(self.num_names, self.num_weights, strict=True))
        cats = self.cat_weights
        b = self.intercept
        for i, rec in enumerate(records):
            z = b
            for name, w in num:
                z += w * log1p(rec[name])
            for name, table in cats:
                z += table.get(rec[name], 0.0)
            out[i] = 1.0 / (1.0 + exp(-z)) if z >= 0 else exp(z) / (1.0 + exp(z))
        return out

    def logits_columns(self, columns: Columns) -> np.ndarray:
        """The logit of every row, a column at a time (batch scoring)."""
        z = np.full(len(columns), self.intercept)
        for name, w in zip(self.num_names, self.num_weights, strict=True):
            z += w * np.log1p(columns.numeric[name])
        for name, weights in self.code_weights.items():
            z += weights[columns.codes[name]]
        return z

    def predict_columns(self, columns: Columns) -> np.ndarray:
        return sigmoid(self.logits_columns(columns))


class _CategoryIndex(dict):
    """A category's index in the schema; a value it does not know gets len(categories)."""

    def __missing__(self, key: Any) -> int:
        return len(self)


CATEGORY_INDEX = {
    name: _CategoryIndex((c, i) for i, c in enumerate(FEATURES_BY_NAME[name].categories))
    for name in CATEGORICAL_FEATURES
}


def records_to_columns(records: list[dict[str, Any]]) -> Columns:
    """Validated JSON records as Columns (a category's index looked up in a dict: 1.0 finds 1)."""
    n = len(records)
    names = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
    columns = dict(zip(names, zip(*map(itemgetter(*names), records), strict=True), strict=True))
    numeric = {name: np.array(columns[name], dtype=np.float64) for name in NUMERIC_FEATURES}
    codes = {
        name: np.fromiter(map(CATEGORY_INDEX[name].__getitem__, columns[name]), dtype=np.intp, count=n)
        for name in CATEGORICAL_FEATURES
    }
    return Columns(numeric, codes)


def verified_fast_scorer(
    pipeline: Any, reference_records: list[dict[str, Any]], expected: np.ndarray
) -> tuple[FastScorer | None, str | None]:
    """(a FastScorer, None) if record by record and column-wise it reproduces `expected` (the
    pipeline's own probabilities), else (None, why not)."""
    try:
        scorer = FastScorer(pipeline)
        by_record = scorer.predict_records(reference_records)
        by_column = scorer.predict_columns(records_to_columns(reference_records))
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        return None, f"not the pipeline shape the fast path knows: {exc}"
    for got in (by_record, by_column):
        if not np.allclose(got, expected, rtol=0, atol=TOLERANCE):
            worst = float(np.abs(got - expected).max())
            return None, f"the fast path differs from the pipeline by {worst:.1e} (more than {TOLERANCE:g})"
    return scorer, None

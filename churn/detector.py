"""Drift detection with alibi-detect's TabularDrift over the 19 schema features.

Kolmogorov-Smirnov on numeric features, chi-squared on categorical ones, Bonferroni correction
for the 19 tests. Categories are encoded with one fixed table built from the schema, so reference
and current data share a code for every value; a value outside the schema gets a code of its own
and is reported (and counted by chi-squared), never crashed on.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn.reports import DriftFeature
from churn.schema import FEATURES

CORRECTION = "bonferroni"


@dataclass
class DriftResult:
    drift: bool
    p_val: float
    threshold: float
    features: dict[str, DriftFeature]

    @property
    def drifted(self) -> list[str]:
        return [name for name, f in self.features.items() if f.drift]


def _codes(feature) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(feature.categories)}


def encode(frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Numeric matrix in schema order; unseen categories -> codes after the schema's, per value."""
    columns = []
    unseen: dict[str, dict[str, int]] = {}
    for feature in FEATURES:
        col = frame[feature.name]
        if not feature.is_categorical:
            columns.append(col.to_numpy(dtype=np.float64))
            continue
        table = _codes(feature)
        values = col.astype(str)
        codes = values.map(table)
        extra = values[codes.isna()]
        if len(extra):
            counts = extra.value_counts()
            unseen[feature.name] = {str(k): int(v) for k, v in counts.items()}
            for offset, value in enumerate(sorted(counts.index)):
                codes = codes.mask(values == value, len(table) + offset)
        columns.append(codes.to_numpy(dtype=np.float64))
    return np.column_stack(columns), unseen


def tabular_drift_class() -> type:
    """alibi-detect's TabularDrift, imported alone.

    `alibi_detect/__init__.py` and `alibi_detect/cd/__init__.py` import every detector and the
    saving module, hence numba, llvmlite and transformers (not OpenCV or scikit-image, which the
    image leaves out): 3.5 s of a 12-s drift check on 100,000 records (cProfile). The two packages
    are registered bare, with their real search path, so that only `alibi_detect.cd.tabular` and
    what it imports (scipy, scikit-learn) load: 0.8 s. Nothing else in this process imports
    alibi-detect.
    """
    for name in ("alibi_detect", "alibi_detect.cd"):
        if name not in sys.modules:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.submodule_search_locations is None:
                raise ImportError(f"{name} is not installed")
            package = importlib.util.module_from_spec(spec)  # its __init__ is not run
            sys.modules[name] = package
    from alibi_detect.cd.tabular import TabularDrift

    return TabularDrift


def detect(reference: pd.DataFrame, current: pd.DataFrame, p_val: float) -> tuple[DriftResult, dict]:
    TabularDrift = tabular_drift_class()  # noqa: N806 - a class

    x_ref, ref_unseen = encode(reference)
    x_cur, cur_unseen = encode(current)
    cat_idx = {i: None for i, f in enumerate(FEATURES) if f.is_categorical}
    # Values outside the schema in the reference get distinct codes in the two encodings:
    # make them one vocabulary by re-encoding both together.
    if ref_unseen:
        both, _ = encode(pd.concat([reference, current], ignore_index=True))
        x_ref, x_cur = both[: len(reference)], both[len(reference) :]
    detector = TabularDrift(x_ref, p_val=p_val, categories_per_feature=cat_idx, correction=CORRECTION)
    out = detector.predict(x_cur, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    threshold = float(np.asarray(out["threshold"]).ravel()[0])
    features: dict[str, DriftFeature] = {}
    for i, feature in enumerate(FEATURES):
        p = float(out["p_val"][i])
        # unseen_categories only when there are some: the report leaves the key out otherwise
        unseen = {"unseen_categories": cur_unseen[feature.name]} if feature.name in cur_unseen else {}
        features[feature.name] = DriftFeature(
            test="Chi2" if feature.is_categorical else "KS",
            statistic=float(out["distance"][i]),
            p_value=p,
            drift=bool(p < threshold),
            **unseen,
        )
    drift = bool(out["is_drift"])  # alibi's batch verdict: any p-value under the corrected threshold
    return DriftResult(drift=drift, p_val=p_val, threshold=threshold, features=features), cur_unseen

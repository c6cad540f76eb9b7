"""Reasons: exact linear contributions, additive to the logit, equal to shap's LinearExplainer."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from churn.explain import ExplainRefused, LinearReasons, explain_scored, parse_explain, top_reasons
from churn.fastpath import FastScorer
from churn.fitting import build_pipeline
from churn.schema import FEATURE_NAMES, RecordValidationError, read_customers_csv
from tests.models import unsupported_pipeline
from tests.support import DATA, ROOT

SHAP_PYTHON = ROOT / ".venv-shap" / "bin" / "python"


@pytest.fixture(scope="module")
def fitted():
    data = read_customers_csv(str(DATA), require_label=True)
    X_train, X_test, y_train, _ = train_test_split(data.features, data.label, test_size=0.2, random_state=0)
    pipeline = build_pipeline(0).fit(X_train, y_train)
    return pipeline, X_train.reset_index(drop=True), X_test.reset_index(drop=True)


def mixes(n: int, seed: int = 3) -> list[dict]:
    """Valid records the data set never holds together: every category and range drawn apart."""
    from churn.schema import FEATURES

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rec = {}
        for f in FEATURES:
            if f.is_categorical:
                rec[f.name] = f.categories[rng.integers(len(f.categories))]
            elif f.kind == "integer":
                rec[f.name] = int(rng.integers(0, int(f.maximum) + 1))
            else:
                rec[f.name] = round(float(rng.uniform(0, f.maximum)), 2)
        out.append(rec)
    return out


def test_baseline_plus_contributions_is_the_pipelines_logit(fitted):
    pipeline, reference, X_test = fitted
    reasons = LinearReasons(FastScorer(pipeline), reference)
    from churn.schema import records_to_frame

    for frame in (X_test, records_to_frame(mixes(500))):
        contributions = reasons.contributions_records(frame.to_dict(orient="records"))
        assert contributions.shape == (len(frame), len(FEATURE_NAMES))
        logit = pipeline.decision_function(frame[list(FEATURE_NAMES)])
        assert np.abs(reasons.baseline + contributions.sum(axis=1) - logit).max() <= 1e-9
    # the baseline is the model's logit at the reference's mean in its transformed space
    pre, clf = pipeline.named_steps["preprocess"], pipeline.named_steps["classifier"]
    mean = np.asarray(pre.transform(reference[list(FEATURE_NAMES)]).mean(axis=0)).ravel()
    assert abs(reasons.baseline - (clf.intercept_[0] + clf.coef_[0] @ mean)) <= 1e-9


def test_top_reasons_are_the_largest_contributions_in_order(fitted):
    pipeline, reference, X_test = fitted
    reasons = LinearReasons(FastScorer(pipeline), reference)
    contributions = reasons.contributions_records(X_test.head(200).to_dict(orient="records"))
    for k in (1, 3, len(FEATURE_NAMES)):
        top = top_reasons(contributions, k)
        assert top.shape == (200, k)
        picked = np.take_along_axis(contributions, top, axis=1)
        assert (np.diff(picked, axis=1) <= 0).all()  # descending
        expected = -np.sort(-contributions, axis=1)[:, :k]
        assert np.array_equal(picked, expected)


def test_small_requests_get_the_same_reasons_record_by_record(fitted):
    """Up to SMALL_REQUEST records, plain Python; beyond, numpy: the same reasons either way."""
    pipeline, reference, X_test = fitted
    reasons = LinearReasons(FastScorer(pipeline), reference)
    records = X_test.head(300).to_dict(orient="records") + mixes(100)
    records.append(dict(records[0], SeniorCitizen=1.0))  # a gRPC Struct's number
    for k in (3, len(FEATURE_NAMES)):
        together = reasons.reasons_records(records, k)  # numpy
        for rec, expected in zip(records, together, strict=True):
            alone = reasons.reasons_records([rec], k)[0]  # plain Python
            assert [(r["feature"], r["value"]) for r in alone] == [
                (r["feature"], r["value"]) for r in expected
            ]
            assert (
                max(abs(a["contribution"] - b["contribution"]) for a, b in zip(alone, expected, strict=True))
                <= 1e-12
            )


def test_a_canary_split_request_gets_each_records_reasons_from_the_version_that_scored_it(fitted):
    from types import SimpleNamespace

    pipeline, reference, X_test = fitted
    other = build_pipeline(0).fit(X_test, (X_test["tenure"] < 12).astype(int))  # another model
    models = [
        SimpleNamespace(tag=f"m:{i}", reasons=LinearReasons.for_pipeline(p, reference), reasons_refusal=None)
        for i, p in enumerate((pipeline, other))
    ]
    records = X_test.head(40).to_dict(orient="records")
    index = np.arange(40) % 2
    explained = explain_scored(models, index, records, 3)
    for i, rec in enumerate(records):
        model = models[index[i]]
        alone = model.reasons.reasons_records([rec], 3)[0]
        assert [(r["feature"], r["value"]) for r in explained.reasons[i]] == [
            (r["feature"], r["value"]) for r in alone
        ]
        assert all(
            abs(a["contribution"] - b["contribution"]) <= 1e-12
            for a, b in zip(explained.reasons[i], alone, strict=True)
        )
        assert explained.baselines[i] == model.reasons.baseline
    assert models[0].reasons.baseline != models[1].reasons.baseline
    refused = SimpleNamespace(tag="m:x", reasons=None, reasons_refusal="not linear")
    assert "not linear" in explain_scored([models[0], refused], index, records, 3).refused
    assert explain_scored([models[0], refused], np.zeros(40, int), records, 3).refused is None


@pytest.mark.parametrize("value", [1, 3, 3.0, 19, "all"])
def test_explain_option_accepts_a_count_or_all(value):
    assert parse_explain(value) == (len(FEATURE_NAMES) if value == "all" else int(value))


@pytest.mark.parametrize("value", [0, -1, 20, 2.5, "3", "ALL", True, None, [3]])
def test_explain_option_refuses_anything_else_naming_the_field(value):
    with pytest.raises(RecordValidationError) as info:
        parse_explain(value)
    assert info.value.errors[0].field == "explain"


def test_a_pipeline_the_fast_path_refuses_cannot_be_explained_and_says_why(fitted):
    _, reference, _ = fitted
    data = read_customers_csv(str(DATA), require_label=True)
    X, _, y, _ = train_test_split(data.features, data.label, test_size=0.2, random_state=0)
    pipeline = unsupported_pipeline(0).fit(X, y)
    with pytest.raises(ExplainRefused, match="numeric preprocessing"):
        LinearReasons.for_pipeline(pipeline, reference)


def test_contributions_equal_shaps_linear_explainer(fitted, tmp_path):
    """shap (its own venv: `make shap-install`) on the transformed columns, with the whole training
    reference as background; its one-hot columns summed into their feature."""
    assert SHAP_PYTHON.exists(), "shap is not installed: run `make shap-install` (make test does)"
    pipeline, reference, X_test = fitted
    reasons = LinearReasons(FastScorer(pipeline), reference)
    rows = X_test.head(300)
    pre, clf = pipeline.named_steps["preprocess"], pipeline.named_steps["classifier"]
    dense = lambda m: np.asarray(m.todense() if hasattr(m, "todense") else m)  # noqa: E731
    # the transformed columns' features: the numbers, then each category's one-hot columns
    transformers = {name: (est, cols) for name, est, cols in pre.transformers_}
    encoder, cat_cols = transformers["cat"]
    groups = list(transformers["num"][1]) + [
        f for f, cats in zip(cat_cols, encoder.categories_, strict=True) for _ in cats
    ]
    np.savez(
        tmp_path / "in.npz",
        coef=clf.coef_[0],
        intercept=clf.intercept_,
        background=dense(pre.transform(reference[list(FEATURE_NAMES)])),
        rows=dense(pre.transform(rows[list(FEATURE_NAMES)])),
    )
    script = f"""
import json, numpy as np, shap
d = np.load({str(tmp_path / "in.npz")!r})
masker = shap.maskers.Independent(d["background"], max_samples=len(d["background"]))
explainer = shap.LinearExplainer((d["coef"], d["intercept"][0]), masker)
values = explainer.shap_values(d["rows"])
np.save({str(tmp_path / "shap.npy")!r}, values)
expected = float(np.ravel(explainer.expected_value)[0])
print(json.dumps({{"expected_value": expected, "version": shap.__version__}}))
"""
    proc = subprocess.run([str(SHAP_PYTHON), "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    per_column = np.load(tmp_path / "shap.npy")
    per_feature = np.stack(
        [per_column[:, [i for i, g in enumerate(groups) if g == f]].sum(axis=1) for f in FEATURE_NAMES],
        axis=1,
    )
    ours = reasons.contributions_records(rows.to_dict(orient="records"))
    print(f"\nshap {out['version']}: max |ours - shap| = {np.abs(ours - per_feature).max():.2e}")
    assert np.abs(ours - per_feature).max() <= 1e-6
    assert abs(reasons.baseline - out["expected_value"]) <= 1e-6

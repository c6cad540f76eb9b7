"""The lean scoring path must give the pipeline's own probabilities, or not be used."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from churn.fastpath import FastScorer, records_to_columns, verified_fast_scorer
from churn.fitting import build_pipeline
from churn.schema import EXAMPLE_RECORD, parse_predict_request, read_customers_csv, records_to_frame
from tests.support import DATA


@pytest.fixture(scope="module")
def fitted():
    data = read_customers_csv(str(DATA), require_label=True)
    X_train, X_test, y_train, _ = train_test_split(data.features, data.label, test_size=0.2, random_state=0)
    return build_pipeline(0).fit(X_train, y_train), X_test


def test_fast_path_reproduces_the_pipeline_on_unseen_rows(fitted):
    pipeline, X_test = fitted
    expected = pipeline.predict_proba(X_test)[:, 1]
    scorer, _ = verified_fast_scorer(pipeline, X_test.to_dict(orient="records"), expected)
    assert scorer is not None
    # JSON records as the API gets them (ints, floats from gRPC) give the same answers
    records, _ = parse_predict_request(
        {"instances": [EXAMPLE_RECORD, dict(EXAMPLE_RECORD, SeniorCitizen=1.0)]}
    )
    frame_proba = pipeline.predict_proba(records_to_frame(records))[:, 1]
    assert np.allclose(scorer.predict_records(records), frame_proba, atol=1e-12, rtol=0)
    # a category the encoder never saw scores like handle_unknown="ignore" does
    odd = dict(records[0], Contract="Lifetime")
    assert np.isclose(
        scorer.predict_records([odd])[0],
        pipeline.predict_proba(records_to_frame([odd]))[:, 1][0],
    )


def test_column_wise_scoring_reproduces_the_pipeline(fitted):
    """The batch path: whole columns, categories as their index in the schema."""
    pipeline, X_test = fitted
    records = X_test.to_dict(orient="records")
    scorer, _ = verified_fast_scorer(pipeline, records, pipeline.predict_proba(X_test)[:, 1])
    by_column = scorer.predict_columns(records_to_columns(records))
    assert np.abs(by_column - pipeline.predict_proba(X_test)[:, 1]).max() <= 1e-12
    assert np.abs(by_column - scorer.predict_records(records)).max() <= 1e-15


def test_a_scorer_that_disagrees_is_refused(fitted):
    pipeline, X_test = fitted
    expected = pipeline.predict_proba(X_test)[:, 1] + 1e-6
    assert verified_fast_scorer(pipeline, X_test.to_dict(orient="records"), expected)[0] is None


def test_other_pipelines_are_refused():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    with pytest.raises((ValueError, KeyError)):
        FastScorer(Pipeline([("classifier", RandomForestClassifier())]))

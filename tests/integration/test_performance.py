"""The performance report (monitoring.performance) on real data through a real server: realized
metrics on outcomes, and the estimate (CBPE) checked against them where nothing has shifted."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn.client import records_from_csv
from churn.estimation import estimate, fit_calibrator
from churn.evaluation import classification_metrics
from churn.model import load_calibration, load_model
from churn.schema import read_customers_csv
from churn.settings import settings_from_env
from tests.support import DATA, Server, http, last_json_line, run_cli, state_env, train, wait_for

pytestmark = pytest.mark.slow

# On random held-out halves of the data set (no shift), the estimate's mean error.
ESTIMATE_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model trained on a random half of the data set; the other half scored by a real server,
    and its real outcomes returned."""
    folder = tmp_path_factory.mktemp("performance")
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    train_half = raw.sample(frac=0.5, random_state=11)
    held_out = raw.drop(train_half.index)
    train_half.to_csv(folder / "train.csv", index=False)
    held_out.to_csv(folder / "held_out.csv", index=False)
    home = folder / "home"
    tag = train(home, "--data", str(folder / "train.csv"))["tag"]
    server = Server("http", home, folder).start()
    try:
        records = records_from_csv(str(folder / "held_out.csv"))
        for start in range(0, len(records), 1000):
            status, body, _ = http(
                "POST", server.url + "/predict", {"instances": records[start : start + 1000]}
            )
            assert status == 200, body
    finally:
        server.stop()  # the log is flushed at exit
    held_out[["customerID", "Churn"]].to_csv(folder / "outcomes.csv", index=False)
    proc = run_cli("monitoring.feedback", "--labels", str(folder / "outcomes.csv"), env=state_env(home))
    assert proc.returncode == 0, proc.stderr
    assert last_json_line(proc.stdout)["matched"] == len(held_out)
    return home, tag, len(held_out), folder


def performance(home, *args):
    proc = run_cli("monitoring.performance", *args, env=state_env(home))
    return proc, (last_json_line(proc.stdout) if proc.stdout.strip() else None)


def test_the_report_computes_from_what_was_served_and_what_came_back(served):
    """Realized metrics are the outcomes against the served probabilities and labels; the
    estimate is CBPE over every served probability, calibrated by the version's saved rows."""
    home, tag, n, folder = served
    proc, summary = performance(home)
    assert proc.returncode == 0, proc.stderr
    model = summary["models"][tag]
    assert model["n_predictions"] == n and model["n_labelled"] == n
    settings = settings_from_env(state_env(home))
    loaded = load_model(settings, tag)
    held = read_customers_csv(str(folder / "held_out.csv"), require_label=True)
    proba = loaded.predict_proba(held.features)
    realized = classification_metrics(held.label.to_numpy(), proba, loaded.threshold)
    cal = load_calibration(settings, tag)
    calibrator = fit_calibrator(cal["churn_probability"].to_numpy(), cal["churn"].to_numpy().astype(int))
    estimated = estimate(proba, proba >= loaded.threshold, calibrator)
    for metric in ("roc_auc", "f1", "precision", "recall", "log_loss"):
        assert model["realized"][metric] == pytest.approx(realized[metric], abs=1e-4), metric
    for metric in ("roc_auc", "f1", "precision", "recall"):
        assert model["estimated"][metric] == pytest.approx(estimated[metric], abs=1e-4), metric
    report = json.loads(Path(summary["report"]).read_text())
    assert report["models"][tag]["training"]["roc_auc"] > 0.8 and report["models"][tag]["role"] == "current"


def test_estimate_is_close_to_realized_on_random_held_out_halves():
    """No shift: a model trained on a random half of the data set, the other half as production.
    Over 8 random splits, the estimate of precision, recall and F1 is within 0.03 of realized on
    average; a single split's realized value carries its own sampling noise (3,500 outcomes)."""
    import logging

    from churn.fitting import fit
    from churn.schema import validate_frame

    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    gaps = {m: [] for m in ("precision", "recall", "f1", "roc_auc")}
    for seed in range(1, 9):
        half = raw.sample(frac=0.5, random_state=seed)
        data, held = (
            validate_frame(half, require_label=True),
            validate_frame(raw.drop(half.index), require_label=True),
        )
        result = fit(data, {"file": "half", "sha256": str(seed)}, 42, logging.getLogger("test"))
        proba = result.pipeline.predict_proba(held.features)[:, 1]
        real = classification_metrics(held.label.to_numpy(), proba, result.threshold)
        cal = result.calibration
        est = estimate(
            proba,
            proba >= result.threshold,
            fit_calibrator(cal["churn_probability"].to_numpy(), cal["churn"].to_numpy().astype(int)),
        )
        for metric, values in gaps.items():
            values.append(round(est[metric] - real[metric], 4))
    print(f"\nestimate - realized over 8 random held-out halves: {gaps}")
    for metric in ("precision", "recall", "f1"):
        assert np.mean(np.abs(gaps[metric])) <= ESTIMATE_TOLERANCE, (metric, gaps[metric])


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_report_files_are_written_atomically_and_the_html_is_self_contained(served):
    home, tag, _, folder = served
    proc, summary = performance(home, "--output-dir", str(folder / "report"))
    assert proc.returncode == 0
    assert sorted(p.name for p in (folder / "report").iterdir()) == [
        "performance_report.html",
        "performance_report.json",
    ]
    page = (folder / "report" / "performance_report.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert tag in page and "estimated (CBPE)" in page and "realized (outcomes)" in page
    # the default folder: reports/<time>-performance, pointed to by reports/latest-performance
    proc, summary = performance(home)
    latest = home / "reports" / "latest-performance"
    assert latest.is_symlink() and Path(summary["report"]).parent.resolve() == latest.resolve()


def test_too_few_outcomes_give_no_realized_metrics(served):
    home, tag, n, _ = served
    proc, summary = performance(home, "--min-labels", str(n + 1))
    assert proc.returncode == 0
    assert summary["models"][tag]["realized"] is None and summary["models"][tag]["estimated"]["f1"] > 0


def test_a_floor_above_the_realized_auc_exits_1_and_names_it(served):
    home, tag, _, _ = served
    proc, summary = performance(home, "--fail-below-auc", "0.99")
    assert proc.returncode == 1 and f"{tag}: realized ROC AUC" in proc.stderr
    assert performance(home, "--fail-below-auc", "0.5")[0].returncode == 0


def test_no_predictions_in_the_window_is_bad_input_or_no_verdict(served):
    home, _, _, _ = served
    proc, _ = performance(home, "--since", "2999-01-01T00:00:00Z")
    assert proc.returncode == 2 and "no predictions" in proc.stderr
    proc, summary = performance(home, "--since", "2999-01-01T00:00:00Z", "--allow-no-verdict")
    assert proc.returncode == 0 and summary["models"] == {} and summary["verdict"] is False
    assert performance(home, "--fail-below-auc", "2")[0].returncode == 2  # argparse: names the option


def test_servers_expose_the_latest_report_as_gauges(served):
    home, tag, n, folder = served
    proc, summary = performance(home)
    assert proc.returncode == 0
    server = Server("http", home, folder, RELOAD_INTERVAL_SECONDS="1").start()
    try:
        expected = [
            f'churn_model_realized_roc_auc{{model="{tag}"}} {summary["models"][tag]["realized"]["roc_auc"]}',
            f'churn_model_estimated_f1{{model="{tag}"}} {summary["models"][tag]["estimated"]["f1"]}',
            f'churn_model_labelled{{model="{tag}"}} {float(n)}',
        ]

        def gauges():
            text = http("GET", server.url + "/metrics")[1]
            stamped = "churn_performance_report_timestamp_seconds" in text
            return stamped and all(line in text for line in expected)

        wait_for(gauges, 30, what="performance gauges on /metrics")
    finally:
        server.stop()


def test_outcomes_of_customers_a_version_was_fitted_on_are_left_out(served, tmp_path):
    """Issue 20.4: 200 customers of the version's own training half come back scored and labelled;
    its realized metrics must not count those it was fitted on (they would flatter it; the other
    20 % of its data were its test rows), and the report says so."""
    import shutil

    from churn.predictionlog import PredictionLog
    from churn.schema import EXAMPLE_RECORD, parse_predict_request
    from churn.serving import ScoreResult

    home, tag, n, folder = served
    copy = tmp_path / "home"
    shutil.copytree(home, copy, symlinks=True)
    trained = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False).head(200)
    log = PredictionLog(settings_from_env(state_env(copy)))
    for cid in trained["customerID"]:
        records, ids = parse_predict_request({"instances": [dict(EXAMPLE_RECORD, customerID=cid)]})
        log.append("r", ScoreResult(np.array([0.9]), np.array([True]), (tag,)), records, ids)
    log.flush(10)
    log.close()
    trained[["customerID", "Churn"]].to_csv(tmp_path / "trained.csv", index=False)
    assert (
        run_cli(
            "monitoring.feedback", "--labels", str(tmp_path / "trained.csv"), env=state_env(copy)
        ).returncode
        == 0
    )
    proc, summary = performance(copy, "--output-dir", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    from churn.model import load_membership, trained_on

    fitted = int(
        trained_on(load_membership(settings_from_env(state_env(home)), tag), trained["customerID"]).sum()
    )
    model = summary["models"][tag]
    report = json.loads(Path(summary["report"]).read_text())["models"][tag]
    assert 150 < fitted < 200 and report["n_trained_on"] == fitted and report["membership_known"] is True
    assert model["n_labelled"] == n + 200 - fitted

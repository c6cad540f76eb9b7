"""The report shapes (churn.reports): files keep the keys their writer set, readers accept a report
that lacks what only people read, and the drift textfile comes from the service's gauge definitions."""

from __future__ import annotations

import json

from churn.metrics import DRIFT_CURRENT_ROWS, DRIFT_DETECTED, DRIFT_P_VALUE, drift_textfile
from churn.reports import DriftFeature, DriftReport, PerformanceReport, read_report, report_json


def _drift(**features: DriftFeature) -> DriftReport:
    return DriftReport(
        drift=True,
        p_val=0.05,
        threshold=0.05 / 19,
        model="churn_model:a",
        n_reference=1000,
        n_current=60,
        created="2026-12-01T00:00:00Z",
        features=features,
        current_source="log",
        reference_source="stored with churn_model:a",
        unreadable_lines=0,
        log_files_vanished=0,
        unseen_categories={},
    )


def test_a_key_written_only_sometimes_is_left_out_when_not_set():
    seen = DriftFeature(test="Chi2", statistic=3.0, p_value=1e-9, drift=True, unseen_categories={"Cable": 4})
    plain = DriftFeature(test="KS", statistic=0.1, p_value=1, drift=False)
    written = json.loads(report_json(_drift(InternetService=seen, tenure=plain)))
    assert written["features"]["InternetService"]["unseen_categories"] == {"Cable": 4}
    assert list(written["features"]["tenure"]) == ["test", "statistic", "p_value", "drift"]
    assert list(written)[:3] == ["drift", "p_val", "threshold"]  # the writer's order


def test_readers_take_a_partial_report_and_refuse_one_without_what_the_gauges_need(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(
        json.dumps({"drift": False, "created": "x", "features": {"tenure": {"p_value": 0.5, "drift": False}}})
    )
    assert read_report(path, DriftReport).features["tenure"].p_value == 0.5
    path.write_text(json.dumps({"created": "x", "models": {}}))
    assert read_report(path, PerformanceReport).models == {}
    path.write_text(json.dumps({"created": "x"}))
    assert read_report(path, PerformanceReport) is None
    path.write_text("{not json")
    assert read_report(path, DriftReport) is None
    assert read_report(tmp_path / "missing.json", DriftReport) is None


def test_the_drift_textfile_has_the_service_gauges_names_and_help():
    report = _drift(
        tenure=DriftFeature(test="KS", statistic=0.2, p_value=0.001234567, drift=True),
        gender=DriftFeature(test="Chi2", statistic=0.1, p_value=0.5, drift=False),
    )
    text = drift_textfile(report)
    for spec in (DRIFT_DETECTED, DRIFT_P_VALUE, DRIFT_CURRENT_ROWS):
        assert f"# HELP {spec.name} {spec.doc}\n# TYPE {spec.name} gauge\n" in text
    assert "churn_drift_detected 1.0\n" in text
    assert 'churn_drift_p_value{feature="tenure"} 0.001234567\n' in text
    assert text.index('feature="tenure"') < text.index('feature="gender"')  # the report's order
    assert "churn_drift_current_rows 60.0\n" in text

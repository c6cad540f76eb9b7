"""The drift job's reading of its input (churn/monitoring_inputs.py): the fast paths give the answers of
the value-by-value ones, whatever the types and their order."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from churn.jsonio import json_bytes
from churn.monitoring_inputs import InputError, normalise, prediction_log_files, read_prediction_log
from churn.schema import EXAMPLE_RECORD, FEATURE_NAMES


def frame(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    rows = [{k: v for k, v in EXAMPLE_RECORD.items() if k in FEATURE_NAMES} for _ in range(n)]
    for name, values in columns.items():
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return pd.DataFrame(rows, dtype=object)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, True], ["1", "True"]),  # equal and hash-equal, but not the same category
        ([True, 1], ["True", "1"]),
        ([1.0, "1", " 0 ", 0], ["1", "1", "0", "0"]),
        ([None, 1], ["None", "1"]),
        ([["x"], 0], ["['x']", "0"]),  # unhashable: an unseen category, never a crash
    ],
)
def test_categories_are_each_values_own_text(values, expected):
    assert normalise(frame(SeniorCitizen=values), "t")["SeniorCitizen"].tolist() == expected


def test_many_records_are_cleaned_like_one():
    one = normalise(frame(Contract=[" One year "], tenure=["  34"]), "t")
    many = normalise(frame(Contract=[" One year "] * 5000, tenure=["  34"] * 5000), "t")
    assert many.iloc[-1].to_dict() == one.iloc[0].to_dict()
    assert one.loc[0, "Contract"] == "One year" and one.loc[0, "tenure"] == 34.0


@pytest.mark.parametrize("bad", [False, None, "abc", float("nan")])
def test_a_non_number_names_its_row_whatever_came_before(bad):
    with pytest.raises(InputError, match=rf"'tenure', row 3: not a number \({str(bad)!r}\)"):
        normalise(frame(tenure=[0, 34, bad]), "t")


def test_new_customers_owe_nothing():
    out = normalise(frame(tenure=[0, 0], TotalCharges=[" ", 12.5]), "t")
    assert out["TotalCharges"].tolist() == [0.0, 12.5]


def test_log_lines_written_with_json_are_read(tmp_path):
    """json_bytes falls back to json for what orjson refuses; the reader must read those too."""
    stamp = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
    lines = []
    for cid in ["\ud800", 2**70, "plain"]:
        lines.append(json_bytes({"time": stamp, "record": {**EXAMPLE_RECORD, "customerID": cid}}))
    lines.append(json.dumps({"time": stamp, "record": EXAMPLE_RECORD, "p": float("nan")}).encode())
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    data = read_prediction_log(prediction_log_files(tmp_path, None), "log")
    assert data.bad_lines == 0 and len(data.frame) == 4


def test_a_log_file_deleted_during_the_scan_is_skipped_and_counted(tmp_path):
    """Issue 19.6: retention or the size cap may delete a file between the listing and the read;
    the reader skips it and says so, it does not fail the job."""
    stamp = "2026-11-30T00:00:00.000Z"
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_bytes(
            json_bytes({"time": stamp, "record": EXAMPLE_RECORD}) + b"\n"
        )
    paths = prediction_log_files(tmp_path, None)
    paths[0].unlink()
    data = read_prediction_log(paths, "log")
    assert len(data.frame) == 1 and data.vanished_files == 1
    assert any("1 file(s) deleted during the scan" in n for n in data.notes)

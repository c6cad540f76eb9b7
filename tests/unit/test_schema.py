import copy
import json
import math

import pandas as pd
import pytest

from churn.client import records_from_csv
from churn.jsonio import json_loads
from churn.schema import (
    EXAMPLE_RECORD,
    FEATURE_NAMES,
    MAX_INSTANCES,
    DataValidationError,
    RecordValidationError,
    parse_predict_request,
    read_customers_csv,
    records_to_frame,
    validate_frame,
)
from tests.support import DATA


def record(**changes):
    rec = copy.deepcopy(EXAMPLE_RECORD)
    rec.update(changes)
    return rec


def test_schema_has_the_19_features_of_the_data_set():
    header = DATA.read_text().splitlines()[0].split(",")
    assert len(FEATURE_NAMES) == 19
    assert set(FEATURE_NAMES) == set(header) - {"customerID", "Churn"}


def test_good_request_parses_and_keeps_ids_in_order():
    recs, ids = parse_predict_request({"instances": [record(), record(customerID=None), record(tenure=0)]})
    assert ids == ["5575-GNVDE", None, "5575-GNVDE"]
    assert [r["tenure"] for r in recs] == [34, 34, 0]
    frame = records_to_frame(recs)
    assert list(frame.columns) == list(FEATURE_NAMES)
    assert frame["TotalCharges"].dtype == "float64"


def test_customer_id_is_optional():
    rec = record()
    del rec["customerID"]
    _, ids = parse_predict_request({"instances": [rec]})
    assert ids == [None]


@pytest.mark.parametrize(
    ("body", "field", "index", "fragment"),
    [
        ({"instances": [record(tenure=-1)]}, "tenure", 0, ">= 0"),
        ({"instances": [record(), record(Contract="Weekly")]}, "Contract", 1, "unknown value 'Weekly'"),
        ({"instances": [record(MonthlyCharges="12")]}, "MonthlyCharges", 0, "expected a number"),
        ({"instances": [record(tenure=1.5)]}, "tenure", 0, "whole number"),
        ({"instances": [record(tenure=True)]}, "tenure", 0, "expected a number"),
        ({"instances": [record(SeniorCitizen=True)]}, "SeniorCitizen", 0, "unknown value True"),
        ({"instances": [record(TotalCharges=math.nan)]}, "TotalCharges", 0, "finite"),
        ({"instances": [record(TotalCharges=math.inf)]}, "TotalCharges", 0, "finite"),
        ({"instances": [record(MonthlyCharges=1e308)]}, "MonthlyCharges", 0, "<="),
        ({"instances": [record(tenure=10**400)]}, "tenure", 0, "<= 1200, got 1000000000"),
        ({"instances": [record(TotalCharges=-(10**30))]}, "TotalCharges", 0, ">= 0"),
        ({"instances": [record(gender="Femme\u00e9")]}, "gender", 0, "unknown value"),
        ({"instances": [record(extra=1)]}, "extra", 0, "unknown field"),
        ({"instances": [{k: v for k, v in record().items() if k != "tenure"}]}, "tenure", 0, "missing"),
        ({"instances": [record(customerID=["x"])]}, "customerID", 0, "string"),
        ({"instances": [5]}, None, 0, "JSON object"),
        ({"instances": []}, "instances", None, "1 to 10000"),
        ({"instances": "x"}, "instances", None, "list"),
        ({}, "instances", None, "missing"),
        ({"instances": [record()], "more": 1}, "more", None, "unknown top-level"),
        ([record()], None, None, "JSON object"),
    ],
)
def test_bad_requests_name_the_field_and_index(body, field, index, fragment):
    with pytest.raises(RecordValidationError) as info:
        parse_predict_request(body)
    err = info.value.errors[0]
    assert (err.field, err.index) == (field, index)
    assert fragment in err.message
    payload = info.value.as_dict()
    assert payload["error"] == "invalid_input" and payload["details"][0]["field"] == field


def test_over_long_list_is_refused_and_max_is_accepted():
    with pytest.raises(RecordValidationError, match="1 to 10000"):
        parse_predict_request({"instances": [record()] * (MAX_INSTANCES + 1)})
    recs, _ = parse_predict_request({"instances": [record()] * MAX_INSTANCES})
    assert len(recs) == MAX_INSTANCES


def test_error_list_is_capped_for_huge_garbage():
    with pytest.raises(RecordValidationError) as info:
        parse_predict_request({"instances": [{}] * 5000})
    assert len(info.value.errors) == 20 and info.value.truncated


def test_data_file_validates_and_blank_total_charges_become_zero_for_new_customers():
    data = read_customers_csv(str(DATA), require_label=True)
    assert len(data.features) == 7043
    assert data.label.sum() == 1869
    assert (data.features.loc[data.features["tenure"] == 0, "TotalCharges"] == 0).all()
    assert any("11 blank" in n for n in data.notes)


def _raw():
    return pd.read_csv(DATA, dtype=str, keep_default_na=False).head(50)


def test_blank_total_charges_with_tenure_is_an_error():
    raw = _raw()
    raw.loc[3, "TotalCharges"] = " "
    with pytest.raises(DataValidationError, match=r"'TotalCharges', row 4"):
        validate_frame(raw, require_label=True)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda r: r.drop(columns=["Contract"]), r"missing column\(s\) \['Contract'\]"),
        (lambda r: r.assign(Bogus="1"), r"unknown column\(s\) \['Bogus'\]"),
        (
            lambda r: r.assign(InternetService=["DSL"] * 9 + ["Cable"] + ["DSL"] * 40),
            r"'InternetService', row 10",
        ),
        (lambda r: r.assign(MonthlyCharges=["abc"] + ["1"] * 49), r"'MonthlyCharges', row 1"),
        (lambda r: r.assign(Churn=["Yes"] * 5 + ["maybe"] + ["No"] * 44), r"'Churn', row 6"),
        (lambda r: r.head(0), "no data rows"),
    ],
)
def test_bad_data_names_column_and_first_bad_row(mutate, pattern):
    with pytest.raises(DataValidationError, match=pattern):
        validate_frame(mutate(_raw()), require_label=True)


def test_unreadable_files(tmp_path):
    with pytest.raises(DataValidationError, match="no such file"):
        read_customers_csv(str(tmp_path / "nope.csv"), require_label=True)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="empty file"):
        read_customers_csv(str(empty), require_label=True)
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DataValidationError):
        read_customers_csv(str(garbage), require_label=True)


BODIES = [
    json.dumps({"instances": [EXAMPLE_RECORD] * 3}).encode(),
    b'{"instances": [{"customerID": 123456789012345678901234567890, "tenure": 1e400}]}',  # big int, inf
    b'{"a": 1, "a": 2, "b": [-0.0, 1e-320, 0.1, 12345678901234567]}',
    b'"\\ud800"',  # a lone surrogate: json reads it
    '{"customerID": "caf\u00e9"}'.encode("utf-16"),  # json detects UTF-16
    b'  {"x": [true, false, null]}  ',
]


@pytest.mark.parametrize("raw", BODIES)
def test_request_json_is_read_exactly_as_json_reads_it(raw):
    assert repr(json_loads(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize(
    "raw", [b"[NaN]", b'{"a": Infinity}', b"[-Infinity]", b"{", b"", b"\xff", b'{"a": 1} x', b"[" * 5000]
)
def test_request_json_refuses_what_is_not_json(raw):
    with pytest.raises((ValueError, RecursionError)):
        json_loads(raw)


ODD_VALUES = [
    True,
    False,
    0,
    1,
    1.0,
    1.5,
    -1,
    0.0,
    72,
    73,
    1e300,
    10**400,
    math.nan,
    math.inf,
    "1",
    "Yes",
    "Yes ",
    "No internet service",
    "Month-to-month",
    "",
    None,
    [],
    {},
    9_999.99,
    10**18,
]


def _both_paths(monkeypatch, body):
    """parse_predict_request's outcome with the column-wise check, then with it off."""
    import churn.schema as schema

    def outcome():
        try:
            return parse_predict_request(copy.deepcopy(body))
        except RecordValidationError as exc:
            return exc.as_dict()

    fast = outcome()
    with monkeypatch.context() as m:
        m.setattr(schema, "_all_valid", lambda instances: False)
        slow = outcome()
    return fast, slow


@pytest.mark.parametrize("name", [*FEATURE_NAMES, "customerID", "extra"])
def test_the_column_wise_check_changes_no_answer(monkeypatch, name):
    for value in ODD_VALUES:
        records = [copy.deepcopy(EXAMPLE_RECORD) for _ in range(3)]
        records[1][name] = value
        fast, slow = _both_paths(monkeypatch, {"instances": records})
        assert repr(fast) == repr(slow), (name, value)
    records = [copy.deepcopy(EXAMPLE_RECORD) for _ in range(3)]
    del records[2][name if name in FEATURE_NAMES else "tenure"]
    fast, slow = _both_paths(monkeypatch, {"instances": records})
    assert repr(fast) == repr(slow) and isinstance(fast, dict)


def test_the_column_wise_check_takes_valid_batches(monkeypatch):
    import churn.schema as schema

    seen = []
    real = schema._all_valid
    monkeypatch.setattr(schema, "_all_valid", lambda instances: seen.append(real(instances)) or seen[-1])
    records, _ = parse_predict_request({"instances": records_from_csv(str(DATA), limit=500)})
    assert len(records) == 500 and seen == [True]

"""Every rule of the Feature table is honoured alike by every path that checks values: a request's
value by value (`_check_value`) and column-wise (`_all_valid`), a data file's (validate_frame)
and a batch file's (churn.batch_scoring.check_block). The cases are made from the table, so a rule added
or changed there is tested here without an edit."""

from __future__ import annotations

import copy

import pandas as pd
import pyarrow as pa
import pytest

from churn.batch_scoring import check_block
from churn.monitoring_inputs import normalise
from churn.schema import (
    EXAMPLE_RECORD,
    FEATURE_NAMES,
    FEATURES,
    FEATURES_BY_NAME,
    DataValidationError,
    Feature,
    _all_valid,
    _check_value,
    validate_frame,
)


def _cases() -> list[tuple[Feature, object, bool]]:
    """(feature, a JSON value, whether the table allows it)."""
    cases: list[tuple[Feature, object, bool]] = []
    for f in FEATURES:
        if f.is_categorical:
            cases += [(f, c, True) for c in f.categories]
            unknown = max(f.categories) + 1 if f.integer_codes else "not a category"
            cases.append((f, unknown, False))
            continue
        bounds = [b for b in (f.minimum, f.maximum) if b is not None]
        cases += [(f, b, True) for b in bounds]
        if f.minimum is not None:
            cases.append((f, f.minimum - 1, False))
        if f.maximum is not None:
            cases.append((f, f.maximum + 1, False))
        cases.append((f, bounds[0] + 0.5, f.kind != "integer"))
        cases.append((f, "abc", False))
    return cases


CASES = _cases()


def _record(**changes) -> dict:
    rec = copy.deepcopy(EXAMPLE_RECORD)
    rec.update(changes)
    return rec


def _file_row(**text) -> dict[str, str]:
    row = {k: str(v) for k, v in EXAMPLE_RECORD.items()}
    row.update(text)
    return row


def _frame_accepts(row: dict[str, str]) -> bool:
    try:
        validate_frame(pd.DataFrame([row], dtype=str), require_label=False)
    except DataValidationError:
        return False
    return True


def _block_accepts(row: dict[str, str]) -> bool:
    table = pa.table({k: pa.array([v], pa.string()) for k, v in row.items()})
    return bool(check_block(table).ok[0])


@pytest.mark.parametrize(("feature", "value", "allowed"), CASES, ids=[f"{f.name}={v!r}" for f, v, _ in CASES])
def test_every_path_honours_the_rule(feature, value, allowed):
    assert (_check_value(feature, value) is None) == allowed
    assert _all_valid([_record(**{feature.name: value})]) == allowed
    row = _file_row(**{feature.name: str(value)})
    assert _frame_accepts(row) == allowed
    assert _block_accepts(row) == allowed


@pytest.mark.parametrize("feature", [f for f in FEATURES if f.integer_codes], ids=lambda f: f.name)
def test_integer_codes(feature):
    """JSON's 1.0 is the code 1 (gRPC's numbers are doubles), True is not; a file spells the code
    as an integer; the drift job takes "1.0" as "1"."""
    for code in feature.categories:
        for value in (code, float(code)):
            assert _check_value(feature, value) is None
            assert _all_valid([_record(**{feature.name: value})])
        assert _check_value(feature, bool(code)) is not None
        assert not _all_valid([_record(**{feature.name: bool(code)})])
        assert not _frame_accepts(_file_row(**{feature.name: f"{code}.0"}))
        assert not _block_accepts(_file_row(**{feature.name: f"{code}.0"}))
        read = validate_frame(pd.DataFrame([_file_row(**{feature.name: f" {code} "})]), require_label=False)
        assert read.features[feature.name].tolist() == [code] and read.features[feature.name].dtype == "int64"
        drift = normalise(pd.DataFrame([_file_row(**{feature.name: f"{code}.0"})]), "t")
        assert drift[feature.name].tolist() == [str(code)]


@pytest.mark.parametrize("feature", [f for f in FEATURES if f.blank], ids=lambda f: f.name)
def test_a_blank_is_allowed_only_where_its_rule_says(feature):
    rule = feature.blank
    when = FEATURES_BY_NAME[rule.when]
    assert not when.is_categorical and FEATURE_NAMES.index(rule.when) < FEATURE_NAMES.index(feature.name)
    other = rule.equals + 1
    assert _check_value(when, other) is None  # a valid `when` that the rule does not cover
    assert _check_value(feature, "") is not None  # a request carries numbers, never blanks
    assert not _all_valid([_record(**{feature.name: ""})])
    for equals, allowed in ((rule.equals, True), (other, False)):
        row = _file_row(**{feature.name: " ", rule.when: str(equals)})
        assert _frame_accepts(row) == allowed
        assert _block_accepts(row) == allowed
    filled = float(rule.value)
    row = _file_row(**{feature.name: "", rule.when: str(rule.equals)})
    read = validate_frame(pd.DataFrame([row]), require_label=False)
    assert read.features[feature.name].tolist() == [filled]
    assert read.notes == [rule.note(feature.name, 1)]
    assert normalise(pd.DataFrame([row]), "t")[feature.name].tolist() == [filled]
    with pytest.raises(ValueError, match=repr(feature.name)):
        normalise(pd.DataFrame([_file_row(**{feature.name: "", rule.when: str(other)})]), "t")


def test_categories_are_all_strings_or_all_ints():
    for f in FEATURES:
        assert f.is_categorical == bool(f.categories)
        assert len({type(c) for c in f.categories}) <= 1 and f.json_types <= {str, int, float}

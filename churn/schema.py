"""The feature schema: the one definition of a customer record.

Training validates the data file with it, the service validates request bodies with it, and the
drift detector picks its tests from it. Nothing else in the project lists feature names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

ID_COLUMN = "customerID"
LABEL_COLUMN = "Churn"
LABEL_VALUES = ("No", "Yes")

MAX_INSTANCES = 10_000
# An error list is capped so that a 10,000-record garbage body yields a readable answer.
MAX_REPORTED_ERRORS = 20

_YES_NO = ("No", "Yes")
_INTERNET_ADDON = ("No", "No internet service", "Yes")


@dataclass(frozen=True)
class Blank:
    """Where a text file (the training CSV, a drift or batch input) may leave a number blank: only
    where the numeric feature `when`, listed earlier, is `equals`; the blank then reads as `value`.
    A JSON request carries numbers, never blanks."""

    when: str
    equals: float
    value: str

    def fills(self, is_blank: np.ndarray, when_values: np.ndarray) -> np.ndarray:
        """Which blanks the rule fills, given `when`'s parsed values."""
        return is_blank & (when_values == self.equals)

    def note(self, name: str, count: int) -> str:
        return f"{name}: {count} blank value(s) with {self.when} {self.equals} set to {self.value}"


@dataclass(frozen=True)
class Feature:
    """One feature and every rule on its values. The checks of a request (value by value and
    column-wise), of a data file (validate_frame, batch scoring) and the drift job's reading
    (churn.monitoring_inputs.normalise) all read these fields, and so does the request model of the docs."""

    name: str
    kind: str  # "numeric" (int or float), "integer" or "categorical"
    # Categories are all strings, or all ints (integer codes, see `integer_codes`).
    categories: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    blank: Blank | None = None

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"

    @cached_property
    def integer_codes(self) -> bool:
        """Categories that are ints (SeniorCitizen 0/1): JSON's 1.0 is the code 1 (gRPC's Struct
        carries every number as a double), a file's text "1" reads as the int 1 ("1.0" is refused),
        the drift job takes "1.0" as "1", and the model's frame holds them as int64."""
        return self.is_categorical and all(type(c) is int for c in self.categories)

    @property
    def whole_numbers(self) -> bool:
        """A JSON request carries this feature as an int (an integer, or integer codes)."""
        return self.kind == "integer" or self.integer_codes

    @cached_property
    def text_categories(self) -> tuple[str, ...]:
        """The categories as a text file spells them."""
        return tuple(str(c) for c in self.categories)

    @cached_property
    def json_types(self) -> frozenset[type]:
        """The Python types a JSON category may have (bool is its own type: True is never 1)."""
        return frozenset({int, float}) if self.integer_codes else frozenset(map(type, self.categories))

    @cached_property
    def category_set(self) -> frozenset[Any]:
        return frozenset(self.categories)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.blank is not None:
            out["blank"] = {"when": self.blank.when, "equals": self.blank.equals, "value": self.blank.value}
        return out


def numeric_faults(feature: Feature, values: np.ndarray) -> np.ndarray:
    """Which of `values` (float64, NaN for what did not parse) break `feature`'s numeric rules:
    not finite, not whole for an integer, out of bounds. Every column-wise check uses it."""
    bad = ~np.isfinite(values)
    if feature.kind == "integer":
        bad |= values != np.floor(values)
    if feature.minimum is not None:
        bad |= values < feature.minimum
    if feature.maximum is not None:
        bad |= values > feature.maximum
    return bad


# Bounds are wider than the data set's (tenure 0-72, MonthlyCharges 18.25-118.75) so that a
# legitimate customer outside the training range is scored (and seen by the drift job), while
# impossible values (negative months, absurd amounts) are refused.
FEATURES: tuple[Feature, ...] = (
    Feature("gender", "categorical", ("Female", "Male")),
    Feature("SeniorCitizen", "categorical", (0, 1)),
    Feature("Partner", "categorical", _YES_NO),
    Feature("Dependents", "categorical", _YES_NO),
    Feature("tenure", "integer", minimum=0, maximum=1200),  # months with the company
    Feature("PhoneService", "categorical", _YES_NO),
    Feature("MultipleLines", "categorical", ("No", "No phone service", "Yes")),
    Feature("InternetService", "categorical", ("DSL", "Fiber optic", "No")),
    Feature("OnlineSecurity", "categorical", _INTERNET_ADDON),
    Feature("OnlineBackup", "categorical", _INTERNET_ADDON),
    Feature("DeviceProtection", "categorical", _INTERNET_ADDON),
    Feature("TechSupport", "categorical", _INTERNET_ADDON),
    Feature("StreamingTV", "categorical", _INTERNET_ADDON),
    Feature("StreamingMovies", "categorical", _INTERNET_ADDON),
    Feature("Contract", "categorical", ("Month-to-month", "One year", "Two year")),
    Feature("PaperlessBilling", "categorical", _YES_NO),
    Feature(
        "PaymentMethod",
        "categorical",
        ("Bank transfer (automatic)", "Credit card (automatic)", "Electronic check", "Mailed check"),
    ),
    Feature("MonthlyCharges", "numeric", minimum=0, maximum=10_000),
    # Deliberate: the 11 blanks of the IBM file are all customers in their first month (tenure 0),
    # who have not been billed yet, so their total is 0. A blank anywhere else is an error like
    # any other non-number.
    Feature("TotalCharges", "numeric", minimum=0, maximum=1_000_000, blank=Blank("tenure", 0, "0")),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
NUMERIC_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if not f.is_categorical)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.is_categorical)
_ALLOWED_RECORD_KEYS = frozenset(FEATURE_NAMES) | {ID_COLUMN}


def schema_dict() -> dict[str, Any]:
    """The schema as plain data, stored in every model's metadata."""
    return {
        "features": [f.as_dict() for f in FEATURES],
        "id_column": ID_COLUMN,
        "label": {"name": LABEL_COLUMN, "values": list(LABEL_VALUES)},
    }


# --------------------------------------------------------------------------------------------
# Request records (JSON objects from the API)
# --------------------------------------------------------------------------------------------


@dataclass
class FieldError:
    message: str
    field: str | None = None
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class RecordValidationError(ValueError):
    """Raised with every problem found (capped at MAX_REPORTED_ERRORS)."""

    def __init__(self, errors: list[FieldError], truncated: bool = False):
        self.errors = errors
        self.truncated = truncated
        first = errors[0]
        where = []
        if first.index is not None:
            where.append(f"record {first.index}")
        if first.field is not None:
            where.append(f"field {first.field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {first.message}" if prefix else first.message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": "invalid_input",
            "message": str(self),
            "details": [e.as_dict() for e in self.errors],
            "truncated": self.truncated,
        }


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_value(feature: Feature, value: Any) -> str | None:
    """Return a message if `value` is not acceptable for `feature`, else None."""
    if feature.is_categorical:
        # bool is an int in Python: True must not pass as SeniorCitizen 1. A float 1.0 does pass,
        # because gRPC's JSON (protobuf Struct) carries every number as a double.
        if isinstance(value, bool | list | dict) or value not in feature.categories:
            allowed = ", ".join(repr(c) for c in feature.categories)
            return f"unknown value {value!r}; allowed: {allowed}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {type(value).__name__}"
    if feature.kind == "integer" and not (isinstance(value, int) or float(value).is_integer()):
        return f"expected a whole number, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):  # ints are exact: never inf or NaN
        return f"expected a finite number, got {value!r}"
    if feature.minimum is not None and value < feature.minimum:
        return f"must be >= {feature.minimum}, got {_short(value)}"
    if feature.maximum is not None and value > feature.maximum:
        return f"must be <= {feature.maximum}, got {_short(value)}"
    return None


_FEATURE_KEYS = frozenset(FEATURE_NAMES)
_NUMBER_TYPES = frozenset({int, float})
_ID_TYPES = frozenset({str, int, type(None)})


def _all_valid(instances: list[Any]) -> bool:
    """True only if `_check_value` and the key checks would find nothing wrong: checked a column
    at a time with set and numpy operations (8.5 ms of per-value Python checks for 1,000 records
    before; 1.6 ms). Anything it is unsure of returns False, and the record-by-record checks then
    find and word the errors."""
    if any(type(r) is not dict or not (_FEATURE_KEYS <= r.keys() <= _ALLOWED_RECORD_KEYS) for r in instances):
        return False
    if not {type(r.get(ID_COLUMN)) for r in instances} <= _ID_TYPES:
        return False
    for feature in FEATURES:
        column = list(map(itemgetter(feature.name), instances))
        types = set(map(type, column))  # bool is its own type: True never passes as 1
        if feature.is_categorical:
            if not (types <= feature.json_types and set(column) <= feature.category_set):
                return False
            continue
        if not types <= _NUMBER_TYPES:
            return False
        try:
            values = np.asarray(column, dtype=np.float64)
        except OverflowError:  # an integer beyond a double
            return False
        if numeric_faults(feature, values).any():
            return False
    return True


def parse_predict_request(body: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Validate a `{"instances": [...]}` body.

    Returns the records (feature fields only) and their customer IDs (None where absent).
    Raises RecordValidationError naming the record index and field of each problem.
    """
    if not isinstance(body, dict):
        raise RecordValidationError([FieldError(f"body must be a JSON object, got {type(body).__name__}")])
    extra = sorted(set(body) - {"instances"})
    if extra:
        raise RecordValidationError([FieldError(f"unknown top-level field(s): {extra}", field=extra[0])])
    if "instances" not in body:
        raise RecordValidationError([FieldError("missing required field", field="instances")])
    instances = body["instances"]
    if not isinstance(instances, list):
        raise RecordValidationError([FieldError("must be a list of records", field="instances")])
    if not 1 <= len(instances) <= MAX_INSTANCES:
        raise RecordValidationError(
            [FieldError(f"must hold 1 to {MAX_INSTANCES} records, got {len(instances)}", field="instances")]
        )
    if _all_valid(instances):
        return [{name: rec[name] for name in FEATURE_NAMES} for rec in instances], [
            rec.get(ID_COLUMN) for rec in instances
        ]
    errors: list[FieldError] = []
    records: list[dict[str, Any]] = []
    ids: list[Any] = []
    truncated = False
    for i, rec in enumerate(instances):
        if len(errors) >= MAX_REPORTED_ERRORS:
            truncated = True
            break
        if not isinstance(rec, dict):
            errors.append(FieldError(f"record must be a JSON object, got {type(rec).__name__}", index=i))
            continue
        for key in rec.keys() - _ALLOWED_RECORD_KEYS:
            errors.append(FieldError("unknown field", field=str(key), index=i))
        for feature in FEATURES:
            if feature.name not in rec:
                errors.append(FieldError("missing required field", field=feature.name, index=i))
                continue
            msg = _check_value(feature, rec[feature.name])
            if msg:
                errors.append(FieldError(msg, field=feature.name, index=i))
        cid = rec.get(ID_COLUMN)
        if cid is not None and not isinstance(cid, str | int):
            errors.append(FieldError("must be a string, a number or null", field=ID_COLUMN, index=i))
        if not errors:
            records.append({name: rec[name] for name in FEATURE_NAMES})
            ids.append(cid)
    if errors:
        raise RecordValidationError(
            errors[:MAX_REPORTED_ERRORS], truncated or len(errors) > MAX_REPORTED_ERRORS
        )
    return records, ids


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Validated records -> the DataFrame the model pipeline takes (fixed column order, dtypes)."""
    frame = pd.DataFrame.from_records(records, columns=list(FEATURE_NAMES))
    return coerce_dtypes(frame)


def coerce_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    for feature in FEATURES:
        if not feature.is_categorical:
            frame[feature.name] = frame[feature.name].astype(np.float64)
        elif feature.integer_codes:
            frame[feature.name] = frame[feature.name].astype(np.int64)
    return frame


# --------------------------------------------------------------------------------------------
# Tabular files (the training CSV, drift inputs)
# --------------------------------------------------------------------------------------------


class DataValidationError(ValueError):
    """A data file does not match the schema; the message names the column and the first bad row."""


@dataclass
class ValidatedData:
    features: pd.DataFrame
    label: pd.Series | None = None
    ids: pd.Series | None = None
    notes: list[str] = field(default_factory=list)


def validate_frame(raw: pd.DataFrame, *, require_label: bool, source: str = "data") -> ValidatedData:
    """Validate a frame read with `dtype=str` (so nothing is silently coerced).

    Row numbers in messages are 1-based data rows as a spreadsheet shows them after the header
    (row 1 is the first record; it sits on line 2 of the file).
    """
    raw = _checked_columns(raw, require_label, source)
    out = pd.DataFrame(index=raw.index)
    notes: list[str] = []
    for feature in FEATURES:
        text = _text(raw[feature.name])
        if feature.is_categorical:
            out[feature.name] = _read_categories(feature, text, source)
        else:
            out[feature.name] = _read_numbers(feature, text, out, notes, source)
    label = _read_label(raw, source) if LABEL_COLUMN in raw.columns else None
    ids = raw[ID_COLUMN].astype(str) if ID_COLUMN in raw.columns else None
    return ValidatedData(
        features=out[list(FEATURE_NAMES)].reset_index(drop=True),
        label=None if label is None else label.reset_index(drop=True),
        ids=None if ids is None else ids.reset_index(drop=True),
        notes=notes,
    )


def _checked_columns(raw: pd.DataFrame, require_label: bool, source: str) -> pd.DataFrame:
    """A copy of `raw` with its column names stripped, once they are the schema's and it has rows."""
    raw = raw.copy()
    raw.columns = [str(c).strip() for c in raw.columns]
    wanted = list(FEATURE_NAMES) + ([LABEL_COLUMN] if require_label else [])
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise DataValidationError(f"{source}: missing column(s) {missing}")
    unknown = [c for c in raw.columns if c not in _ALLOWED_RECORD_KEYS and c != LABEL_COLUMN]
    if unknown:
        raise DataValidationError(f"{source}: unknown column(s) {unknown}")
    if raw.empty:
        raise DataValidationError(f"{source}: no data rows")
    return raw


def _text(column: pd.Series) -> pd.Series:
    return column.astype(str).str.strip()


def _first_bad(bad: pd.Series | np.ndarray) -> int | None:
    """The position of the first True of `bad`, None if there is none."""
    bad = np.asarray(bad)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _read_categories(feature: Feature, text: pd.Series, source: str) -> pd.Series:
    allowed = list(feature.text_categories)
    row = _first_bad(~text.isin(allowed))
    if row is not None:
        raise DataValidationError(
            f"{source}: column {feature.name!r}, row {row + 1}: unknown value {text.iloc[row]!r} "
            f"(allowed: {allowed})"
        )
    return text.astype(np.int64) if feature.integer_codes else text


def _read_numbers(
    feature: Feature, text: pd.Series, parsed: pd.DataFrame, notes: list[str], source: str
) -> np.ndarray:
    """`feature`'s column as float64; `parsed` holds the features read before it (a blank's rule)."""
    rule = feature.blank
    if rule is not None:
        fill = rule.fills((text == "").to_numpy(), parsed[rule.when].to_numpy())
        if fill.any():
            notes.append(rule.note(feature.name, int(fill.sum())))
        text = text.mask(fill, rule.value)
    values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    row = _first_bad(numeric_faults(feature, values))
    if row is not None:
        raise DataValidationError(
            f"{source}: column {feature.name!r}, row {row + 1}: invalid value {text.iloc[row]!r} "
            f"(expected a {feature.kind} in [{feature.minimum}, {feature.maximum}])"
        )
    return values


def _read_label(raw: pd.DataFrame, source: str) -> pd.Series:
    label = _text(raw[LABEL_COLUMN])
    row = _first_bad(~label.isin(LABEL_VALUES))
    if row is not None:
        raise DataValidationError(
            f"{source}: column {LABEL_COLUMN!r}, row {row + 1}: unknown value {label.iloc[row]!r} "
            f"(allowed: {list(LABEL_VALUES)})"
        )
    return (label == "Yes").astype(np.int64)


def read_raw_csv(path: str, error: type[ValueError] = DataValidationError) -> pd.DataFrame:
    """Every column as text (nothing silently coerced); any failure is `error` with a clear message."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a CSV file") from None
    except pd.errors.EmptyDataError:
        raise error(f"{path}: empty file (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def read_customers_csv(path: str, *, require_label: bool) -> ValidatedData:
    """Read and validate a CSV; every failure is a DataValidationError with a clear message."""
    return validate_frame(read_raw_csv(path), require_label=require_label, source=str(path))


# One real customer of the data set (row 2, customerID 5575-GNVDE): the examples of docs/serving.md, the
# OpenAPI example and the smoke test run after every model load all use it.
EXAMPLE_RECORD: dict[str, Any] = {
    "customerID": "5575-GNVDE",
    "gender": "Male",
    "SeniorCitizen": 0,
    "Partner": "No",
    "Dependents": "No",
    "tenure": 34,
    "PhoneService": "Yes",
    "MultipleLines": "No",
    "InternetService": "DSL",
    "OnlineSecurity": "Yes",
    "OnlineBackup": "No",
    "DeviceProtection": "Yes",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "One year",
    "PaperlessBilling": "No",
    "PaymentMethod": "Mailed check",
    "MonthlyCharges": 56.95,
    "TotalCharges": 1889.5,
}

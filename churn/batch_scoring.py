"""Batch scoring: a customers file (CSV or Parquet) to a scores file, in bounded memory.

The file is read a block at a time (pyarrow, every value as text, so nothing is coerced
silently), each row is checked against the feature schema (the rules of churn.schema's file
reader, the blank TotalCharges of a new customer included), and the rows that pass are scored on
the verified column-wise fast path (churn/fastpath.py: the numbers the service answers with), or
through the pipeline for a model the fast path refuses. Rows that fail go to a rejects file with
their row number and the reason; nothing is dropped silently.

Both files are written where no one can see them (an unnamed O_TMPFILE, or a hidden `.partial`
file where the file system has none) and appear complete at the end, under their names, or not at
all. `Shard(i, n)` takes the rows whose number is i modulo n: n shards are every row exactly once.
"""

from __future__ import annotations

import csv
import gzip
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churn.explain import top_reasons
from churn.fastpath import Columns, records_to_columns
from churn.logs import setup_logging
from churn.model import LoadedModel, load_current_model, load_model, load_reference, tag_in_store
from churn.schema import (
    FEATURE_NAMES,
    FEATURES,
    FEATURES_BY_NAME,
    ID_COLUMN,
    LABEL_COLUMN,
    NUMERIC_FEATURES,
    coerce_dtypes,
    numeric_faults,
)
from churn.settings import Settings, settings_or_exit

# A share of bad rows past which the file, not a few rows, is wrong (the monitoring commands'
# --max-bad-fraction default for unreadable log lines is the same).
MAX_BAD_ROWS_FRACTION = 0.01
# CSV read a block at a time: 2 MiB is about 15,000 rows of the data set's shape. pyarrow's parser holds
# about 35x a block while it converts one (131 MB measured with 4 MiB blocks, 73 MB with 2 MiB).
BLOCK_BYTES = 2 << 20
PARQUET_BATCH_ROWS = 32_768
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# A plain number: what pyarrow's cast to float64 reads, and nothing it would refuse.
_NUMBER = r"^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


class BatchInputError(ValueError):
    """Bad input for a batch run (exit code 2): the message names the problem."""


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1


@dataclass(frozen=True)
class BatchOptions:
    """`python -m scoring.batch`'s options, checked (see scoring/batch.py)."""

    input: Path
    output: Path
    model: str | None  # None: the registry's current model
    reasons: int  # 0: none
    shard: Shard
    max_bad_fraction: float


@dataclass(frozen=True)
class BatchSummary:
    """The last line of the command's stdout (keys in this order)."""

    rows_in: int
    rows_scored: int
    rows_rejected: int
    model: str
    output: str
    rejects: str
    seconds: float
    rows_per_second: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_scored": self.rows_scored,
            "rows_rejected": self.rows_rejected,
            "model": self.model,
            "output": self.output,
            "rejects": self.rejects,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


def rejects_path(output: Path) -> Path:
    name = output.name
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(name + ".rejects.csv")


# ------------------------------------------------------------------------------------------------
# Files that appear complete or not at all
# ------------------------------------------------------------------------------------------------


class AtomicFile:
    """A file written out of sight and published under `path` whole. A process killed before
    `publish` leaves nothing (O_TMPFILE: the file has no name), or, on a file system without
    O_TMPFILE, a hidden `.NAME.PID.partial` beside it."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial: Path | None = None
        try:
            self._fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o644)
            where = f"/proc/self/fd/{self._fd}"
        except (OSError, AttributeError):  # no O_TMPFILE here (NFS, an old kernel, not Linux)
            self._partial = path.parent / f".{path.name}.{os.getpid()}.partial"
            self._fd = os.open(self._partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            where = str(self._partial)
        self.sink = pa.OSFile(where, "wb")  # a second handle: writers may close theirs

    def publish(self) -> None:
        if not self.sink.closed:
            self.sink.close()
        os.fsync(self._fd)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            if self._partial is None:
                named = f".{self.path.name}.{os.getpid()}.tmp"
                # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N gives the unnamed file a name. Python
                # calls linkat, rather than link (which fails with EXDEV), only when given a dir_fd.
                os.link(f"/proc/self/fd/{self._fd}", named, src_dir_fd=folder, dst_dir_fd=folder)
                os.replace(named, self.path.name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                os.replace(self._partial, self.path)
            os.fsync(folder)
        finally:
            os.close(folder)
            os.close(self._fd)

    def discard(self) -> None:
        if not self.sink.closed:
            self.sink.close()
        try:
            os.close(self._fd)
        except OSError:
            pass
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# Reading: blocks of text columns, each row with its number in the file
# ------------------------------------------------------------------------------------------------


@dataclass
class Block:
    """Rows read: their text columns, their 1-based data row numbers, and the rows that could not
    be split into the header's columns (row number, reason)."""

    table: pa.Table
    rows: np.ndarray
    malformed: list[tuple[int, str]] = field(default_factory=list)


class CsvSource:
    def __init__(self, path: Path):
        self.path = path
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rt", newline="", encoding="utf-8") as fh:
                self.columns = next(csv.reader(fh))
        except StopIteration:
            raise BatchInputError(f"{path}: empty file (no header)") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BatchInputError(f"{path}: not a readable CSV ({exc})") from None
        self.columns = [c.strip() for c in self.columns]
        self._raw = pa.OSFile(str(path), "rb")
        self.size = os.path.getsize(path)
        self._bad: list[tuple[int, str]] = []  # (line number, reason), from pyarrow's parser
        self._next_row = 1

    def _invalid(self, row) -> str:
        text = row.text if len(row.text) <= 200 else row.text[:197] + "..."
        self._bad.append(
            (row.number - 1, f"expected {row.expected_columns} fields, got {row.actual_columns}: {text!r}")
        )
        return "skip"

    def position(self) -> int:
        return self._raw.tell()

    def blocks(self) -> Iterator[Block]:
        stream = pa.CompressedInputStream(self._raw, "gzip") if self.path.name.endswith(".gz") else self._raw
        # One thread: pyarrow numbers the rows it cannot split (line numbers) only then, and the
        # scoring of the previous block overlaps the reading anyway.
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(invalid_row_handler=self._invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in self.columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        try:
            for batch in reader:
                yield self._numbered(pa.Table.from_batches([batch]))
        except pa.ArrowInvalid as exc:
            raise BatchInputError(f"{self.path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
        if self._bad:  # malformed rows after the last good one
            malformed, self._bad = sorted(self._bad), []
            yield Block(
                pa.table({c: pa.array([], pa.string()) for c in self.columns}),
                np.empty(0, np.int64),
                malformed,
            )

    def _numbered(self, table: pa.Table) -> Block:
        """Row numbers for the good rows of a block: the next numbers not taken by a malformed row
        (pyarrow reports those as it parses, possibly a block ahead)."""
        n = table.num_rows
        taken = sorted(r for r, _ in self._bad)
        if not taken:
            rows = np.arange(self._next_row, self._next_row + n, dtype=np.int64)
        else:
            span = np.arange(self._next_row, self._next_row + n + len(taken), dtype=np.int64)
            rows = span[~np.isin(span, taken)][:n]
        last = int(rows[-1]) if n else self._next_row - 1
        malformed = sorted(b for b in self._bad if b[0] <= last)
        self._bad = [b for b in self._bad if b[0] > last]
        self._next_row = last + 1
        return Block(table, rows, malformed)

    def close(self) -> None:
        self._raw.close()


class ParquetSource:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise BatchInputError(f"{path}: not a readable Parquet file ({exc})") from None
        self.columns = list(self._file.schema_arrow.names)
        self.size = self._file.metadata.num_rows
        self._done = 0

    def position(self) -> int:
        return self._done

    def blocks(self) -> Iterator[Block]:
        start = 1
        try:
            for batch in self._file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                # as text, like a CSV's values (a double's text is its shortest exact form)
                table = pa.table({c: pc.cast(batch.column(c), pa.string()) for c in self.columns})
                rows = np.arange(start, start + table.num_rows, dtype=np.int64)
                start += table.num_rows
                self._done = start - 1
                yield Block(table, rows)
        except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise BatchInputError(f"{self.path}: not a readable Parquet file ({exc})") from None

    def close(self) -> None:
        self._file.close()


def open_source(path: Path) -> CsvSource | ParquetSource:
    if not path.exists():
        raise BatchInputError(f"{path}: no such file")
    if path.is_dir():
        raise BatchInputError(f"{path}: is a directory, expected a file")
    if path.name.endswith(CSV_SUFFIXES):
        source: CsvSource | ParquetSource = CsvSource(path)
    elif path.name.endswith(PARQUET_SUFFIXES):
        source = ParquetSource(path)
    else:
        raise BatchInputError(f"{path}: expected a {'/'.join(CSV_SUFFIXES + PARQUET_SUFFIXES)} file")
    allowed = set(FEATURE_NAMES) | {ID_COLUMN, LABEL_COLUMN}
    missing = [c for c in FEATURE_NAMES if c not in source.columns]
    unknown = [c for c in source.columns if c not in allowed]
    duplicated = sorted({c for c in source.columns if source.columns.count(c) > 1})
    if missing or unknown or duplicated:
        source.close()
        problems = [
            f"{what} column(s) {cols}"
            for what, cols in (("missing", missing), ("unknown", unknown), ("duplicated", duplicated))
            if cols
        ]
        raise BatchInputError(f"{path}: {'; '.join(problems)}")
    return source


# ------------------------------------------------------------------------------------------------
# Checking a block against the schema
# ------------------------------------------------------------------------------------------------


@dataclass
class Checked:
    """A block's rows against the schema: which passed, why the others did not (by position),
    the passing rows as Columns, and every feature's text (for the reasons' values)."""

    ok: np.ndarray
    why: dict[int, str]
    columns: Columns
    text: dict[str, pa.Array]


def _value(array: pa.Array, i: int) -> str:
    value = array[i].as_py()
    return repr(value if value is None else value.strip())


def check_block(table: pa.Table) -> Checked:
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    why: dict[int, str] = {}

    def refuse(mask: np.ndarray, message) -> None:
        for i in np.flatnonzero(mask & ~bad).tolist():
            why[i] = message(i)
        bad[:] |= mask

    text: dict[str, pa.Array] = {}
    numeric: dict[str, np.ndarray] = {}
    codes: dict[str, np.ndarray] = {}
    for feature in FEATURES:
        name = feature.name
        raw = table.column(name).combine_chunks()
        trimmed = pc.utf8_trim_whitespace(raw)
        text[name] = trimmed
        missing = raw.is_null().to_numpy(zero_copy_only=False)
        refuse(missing, lambda i, name=name: f"column {name!r}: missing value")
        if feature.is_categorical:
            allowed = list(feature.text_categories)
            index = pc.fill_null(pc.index_in(trimmed, value_set=pa.array(allowed)), -1)
            code = index.to_numpy(zero_copy_only=False).astype(np.intp)
            refuse(
                code < 0,
                lambda i, name=name, raw=raw, allowed=allowed: (
                    f"column {name!r}: unknown value {_value(raw, i)} (allowed: {allowed})"
                ),
            )
            codes[name] = code
            continue
        rule = feature.blank
        if rule is not None:  # churn.schema's rule, e.g. a new customer's blank total is 0
            fill = rule.fills(pc.equal(trimmed, "").to_numpy(zero_copy_only=False), numeric[rule.when])
            trimmed = pc.if_else(pa.array(fill), rule.value, trimmed)
        plain = pc.fill_null(pc.match_substring_regex(trimmed, _NUMBER), False)
        values = pc.cast(pc.if_else(plain, trimmed, "nan"), pa.float64()).to_numpy(zero_copy_only=False)
        refuse(
            numeric_faults(feature, values),
            lambda i, f=feature, raw=raw: (
                f"column {f.name!r}: invalid value {_value(raw, i)} "
                f"(expected a {f.kind} in [{f.minimum}, {f.maximum}])"
            ),
        )
        numeric[name] = values
    ok = ~bad
    columns = Columns(
        {k: v[ok] for k, v in numeric.items()},
        {k: v[ok] for k, v in codes.items()},
    )
    return Checked(ok, why, columns, text)


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------


class Scorer:
    """What a scores file holds for the rows that passed, from one model."""

    def __init__(self, model: LoadedModel, reference: pd.DataFrame, reasons: int):
        self.model = model
        self.k = reasons
        # The reference scored as the rows are, so that a customer equal to a reference row ranks
        # with it, not one place apart by a rounding difference.
        self.reference = np.sort(self.probabilities(records_to_columns(reference.to_dict(orient="records"))))
        self.feature_names = pa.array(FEATURE_NAMES)
        fields = [
            pa.field(ID_COLUMN, pa.string()),
            pa.field("churn_probability", pa.float64()),
            pa.field("churn", pa.bool_()),
            pa.field("risk_percentile", pa.float64()),
            pa.field("model", pa.dictionary(pa.int32(), pa.string())),
        ]
        if reasons:
            fields.append(pa.field("baseline", pa.float64()))
            for i in range(1, reasons + 1):
                fields += [
                    pa.field(f"reason_{i}", pa.dictionary(pa.int32(), pa.string())),
                    pa.field(f"reason_{i}_value", pa.string()),
                    pa.field(f"reason_{i}_contribution", pa.float64()),
                ]
        self.schema = pa.schema(fields)

    def probabilities(self, columns: Columns) -> np.ndarray:
        if self.model.fast is not None:
            return self.model.fast.predict_columns(columns)
        frame = pd.DataFrame(
            {
                name: columns.numeric[name]
                if name in NUMERIC_FEATURES
                else np.asarray(FEATURES_BY_NAME[name].categories, dtype=object)[columns.codes[name]]
                for name in FEATURE_NAMES
            }
        )
        return self.model.predict_proba(coerce_dtypes(frame))

    def batch(self, ids: pa.Array, checked: Checked) -> pa.RecordBatch:
        columns = checked.columns
        n = len(columns)
        proba = self.probabilities(columns)
        percentile = np.searchsorted(self.reference, proba, side="right") * (100.0 / len(self.reference))
        arrays: list[pa.Array] = [
            ids,
            pa.array(proba),
            pa.array(proba >= self.model.threshold),
            pa.array(percentile),
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([self.model.tag])),
        ]
        if self.k:
            reasons = self.model.reasons
            assert reasons is not None
            contributions = reasons.contributions_columns(columns)
            top = top_reasons(contributions, self.k)
            shares = np.take_along_axis(contributions, top, axis=1)
            ok = pa.array(checked.ok)
            texts = [pc.filter(checked.text[name], ok) for name in FEATURE_NAMES]
            arrays.append(pa.array(np.full(n, reasons.baseline)))
            for i in range(self.k):
                j = top[:, i]
                arrays += [
                    pa.DictionaryArray.from_arrays(pa.array(j.astype(np.int32)), self.feature_names),
                    pc.choose(pa.array(j.astype(np.int8)), *texts),
                    pa.array(shares[:, i]),
                ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _rejects_table(
    table: pa.Table,
    rows: np.ndarray,
    why: dict[int, str],
    malformed: list[tuple[int, str]],
    schema: pa.Schema,
) -> pa.Table:
    """The rejected rows of a block, in row order: number, reason, and the row as it was read
    (a row that could not be split into columns has its text in the reason)."""
    positions = sorted(why)
    failed = table.take(pa.array(positions, pa.int64()))
    checked = pa.table(
        [pa.array(rows[positions], pa.int64()), pa.array([why[i] for i in positions], pa.string())]
        + [failed.column(c) for c in schema.names[2:]],
        schema=schema,
    )
    unsplit = pa.table(
        [pa.array([r for r, _ in malformed], pa.int64()), pa.array([w for _, w in malformed], pa.string())]
        + [pa.nulls(len(malformed), pa.string()) for _ in schema.names[2:]],
        schema=schema,
    )
    return pa.concat_tables([checked, unsplit]).sort_by("row")


@dataclass
class _Rejects:
    count: int = 0
    first: tuple[int, str] | None = None


def _progress(source, stream):
    if stream is None or not stream.isatty():
        return None
    from tqdm import tqdm

    if isinstance(source, CsvSource):
        return tqdm(total=source.size, unit="B", unit_scale=True, file=stream, desc="scoring")
    return tqdm(total=source.size, unit=" rows", unit_scale=True, file=stream, desc="scoring")


def _is_parquet_output(output: Path) -> bool:
    """The scores file's format, from its name (a .csv or a .parquet file, nothing else)."""
    if output.name.endswith(CSV_SUFFIXES[:1]):
        return False
    if output.name.endswith(PARQUET_SUFFIXES):
        return True
    raise BatchInputError(f"{output}: the output must be a .csv or .parquet file")


def _check_arguments(model: LoadedModel, input_path: Path, output: Path, reasons: int) -> None:
    """Refuse a run that could not succeed, before any file is opened."""
    if output.resolve() == input_path.resolve():
        raise BatchInputError(f"{output}: the output must not be the input")
    if reasons and model.reasons is None:
        raise BatchInputError(
            f"--reasons: model {model.tag} cannot be explained exactly ({model.reasons_refusal})"
        )


class _Outputs:
    """The scores file and its rejects file: written out of sight, then published together
    (rejects first) or discarded together."""

    def __init__(self, output: Path, write_parquet: bool, scores_schema: pa.Schema, columns: list[str]):
        self.reject_schema = pa.schema(
            [pa.field("row", pa.int64()), pa.field("reason", pa.string())]
            + [pa.field(c, pa.string()) for c in columns]
        )
        self.scores, self.rejects = AtomicFile(output), AtomicFile(rejects_path(output))
        self.score_writer = (
            pq.ParquetWriter(self.scores.sink, scores_schema)
            if write_parquet
            else pacsv.CSVWriter(self.scores.sink, scores_schema)
        )
        self.reject_writer = pacsv.CSVWriter(self.rejects.sink, self.reject_schema)

    def publish(self) -> None:
        self.score_writer.close()
        self.reject_writer.close()
        self.rejects.publish()
        self.scores.publish()

    def discard(self) -> None:
        for writer in (self.score_writer, self.reject_writer):
            try:
                writer.close()
            except Exception:
                pass
        self.scores.discard()
        self.rejects.discard()


@dataclass
class _Counts:
    """Rows read from the whole file (malformed ones included), rows of this shard, rows scored,
    and the rows rejected."""

    total: int = 0
    rows_in: int = 0
    scored: int = 0
    rejected: _Rejects = field(default_factory=_Rejects)


@dataclass
class _ShardRows:
    """The part of a block that belongs to this shard."""

    table: pa.Table
    rows: np.ndarray
    malformed: list[tuple[int, str]]


def _take_shard(block: Block, shard: Shard) -> _ShardRows:
    mine = (block.rows - 1) % shard.count == shard.index
    table = block.table.filter(pa.array(mine)) if shard.count > 1 else block.table
    malformed = [m for m in block.malformed if (m[0] - 1) % shard.count == shard.index]
    return _ShardRows(table, block.rows[mine], malformed)


def _score_block(part: _ShardRows, has_ids: bool, scorer: Scorer, outputs: _Outputs, counts: _Counts) -> None:
    """Check a block's rows, write the scores of those that pass and the rejects of the others."""
    counts.rows_in += len(part.rows) + len(part.malformed)
    checked = check_block(part.table)
    ids = (
        pc.filter(part.table.column(ID_COLUMN).combine_chunks(), pa.array(checked.ok))
        if has_ids
        else pa.nulls(int(checked.ok.sum()), pa.string())
    )
    if checked.ok.any():
        outputs.score_writer.write_batch(scorer.batch(ids, checked))
        counts.scored += int(checked.ok.sum())
    if checked.why or part.malformed:
        table_of_rejects = _rejects_table(
            part.table, part.rows, checked.why, part.malformed, outputs.reject_schema
        )
        rejected = counts.rejected
        if rejected.first is None:
            rejected.first = (
                table_of_rejects["row"][0].as_py(),
                table_of_rejects["reason"][0].as_py(),
            )
        rejected.count += table_of_rejects.num_rows
        outputs.reject_writer.write_table(table_of_rejects)


def _check_bad_share(input_path: Path, counts: _Counts, max_bad_fraction: float) -> None:
    """Refuse a file with no rows, or with more rejected rows than --max-bad-fraction allows
    (then the file, not a few rows, is wrong)."""
    if counts.total == 0:
        raise BatchInputError(f"{input_path}: no data rows")
    rejected = counts.rejected
    if counts.rows_in and rejected.count > max_bad_fraction * counts.rows_in:
        row, reason = rejected.first  # type: ignore[misc]
        raise BatchInputError(
            f"{input_path}: {rejected.count} of {counts.rows_in} rows failed validation, more than "
            f"--max-bad-fraction {max_bad_fraction} allows; the first, row {row}: {reason}"
        )


def score_file(
    model: LoadedModel,
    reference: pd.DataFrame,
    input_path: Path,
    output: Path,
    *,
    reasons: int = 0,
    shard: Shard = Shard(),
    max_bad_fraction: float = MAX_BAD_ROWS_FRACTION,
    progress_stream=None,
) -> BatchSummary:
    """Score `input_path` into `output` (and its rejects file). BatchInputError for bad input,
    with nothing written; OSError if a file cannot be written."""
    started = time.monotonic()
    write_parquet = _is_parquet_output(output)
    _check_arguments(model, input_path, output, reasons)
    source = open_source(input_path)
    scorer = Scorer(model, reference, reasons)
    outputs = _Outputs(output, write_parquet, scorer.schema, source.columns)
    counts = _Counts()
    bar = _progress(source, progress_stream)
    try:
        for block in source.blocks():
            counts.total += len(block.rows) + len(block.malformed)
            _score_block(_take_shard(block, shard), ID_COLUMN in source.columns, scorer, outputs, counts)
            if bar is not None:
                bar.update(source.position() - bar.n)
        _check_bad_share(input_path, counts, max_bad_fraction)
        outputs.publish()
        if bar is not None:
            bar.update(bar.total - bar.n)
    except BaseException:
        outputs.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
        source.close()
    seconds = time.monotonic() - started
    return BatchSummary(
        rows_in=counts.rows_in,
        rows_scored=counts.scored,
        rows_rejected=counts.rejected.count,
        model=model.tag,
        output=str(output),
        rejects=str(rejects_path(output)),
        seconds=seconds,
        rows_per_second=counts.rows_in / seconds if seconds > 0 else 0.0,
    )


def run_batch(
    settings: Settings,
    input_path: Path,
    output: Path,
    *,
    tag: str | None = None,
    reasons: int = 0,
    shard: Shard = Shard(),
    max_bad_fraction: float = MAX_BAD_ROWS_FRACTION,
    progress_stream=None,
) -> BatchSummary:
    """The command: the registry's current model (or `tag`) scores `input_path` into `output`.
    BatchInputError (exit 2) for bad input, an unknown tag included; ModelUnavailable (exit 1)
    when the model cannot be had now (none current yet, the store unreadable)."""
    started = time.monotonic()
    if tag is not None and not tag_in_store(settings, tag):
        raise BatchInputError(
            f"--model: {tag} is not in the model store {settings.bentoml_home_path / 'models'}"
        )
    model = load_model(settings, tag) if tag is not None else load_current_model(settings)
    summary = score_file(
        model,
        load_reference(settings, model.tag),
        input_path,
        output,
        reasons=reasons,
        shard=shard,
        max_bad_fraction=max_bad_fraction,
        progress_stream=progress_stream,
    )
    seconds = time.monotonic() - started  # the model's loading included: file to file
    return replace(summary, seconds=seconds, rows_per_second=summary.rows_in / seconds)


def score_batch(options: BatchOptions) -> BatchSummary:
    """`python -m scoring.batch` but its option parsing and exit codes: the settings (SystemExit when
    bad), the log, then `run_batch` with progress on stderr. Raises what `run_batch` raises."""
    settings = settings_or_exit()
    log = setup_logging(settings, "batch").getChild("batch")
    # A Job deleted or evicted gets SIGTERM: exit through the cleanup, which leaves no partial file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    summary = run_batch(
        settings,
        options.input,
        options.output,
        tag=options.model,
        reasons=options.reasons,
        shard=options.shard,
        max_bad_fraction=options.max_bad_fraction,
        progress_stream=sys.stderr,
    )
    log.info(
        "scored %d of %d rows (%d rejected) with %s into %s in %.1f s",
        summary.rows_scored,
        summary.rows_in,
        summary.rows_rejected,
        summary.model,
        summary.output,
        summary.seconds,
    )
    return summary

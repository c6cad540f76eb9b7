"""`python -m scoring.batch`: a customers file to a scores file, on the verified scoring path, with
rejects written, shards that add up, no partial file after a kill, a progress bar on a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest

from churn.explain import LinearReasons
from churn.model import get_store_model, load_reference
from churn.schema import FEATURE_NAMES, ID_COLUMN, records_to_frame
from churn.settings import settings_from_env
from tests.integration.test_model_serving import valid_mixes
from tests.support import DATA, ROOT, last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow

TOLERANCE = 1e-9
SUMMARY_KEYS = [
    "rows_in",
    "rows_scored",
    "rows_rejected",
    "model",
    "output",
    "rejects",
    "seconds",
    "rows_per_second",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("batch")
    summary = train(home)
    return home, summary


@pytest.fixture(scope="module")
def customers(tmp_path_factory) -> Path:
    """The data set's 7,043 customers (with their Churn column) and 1,000 valid recombined ones."""
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    mixes = pd.DataFrame(valid_mixes(1000)).astype(str)
    path = tmp_path_factory.mktemp("in") / "customers.csv"
    pd.concat([frame, mixes], ignore_index=True).fillna("No").to_csv(path, index=False)
    return path


def batch(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli("scoring.batch", *args, env=state_env(home), timeout=timeout)


def pipeline_of(home: Path, tag: str):
    return bentoml.sklearn.load_model(get_store_model(settings_from_env(state_env(home)), tag))


def expected_scores(home: Path, tag: str, path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The input read with pandas (blank TotalCharges of new customers as 0, as training reads
    them) and the saved pipeline's own probabilities for it."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    raw["TotalCharges"] = raw["TotalCharges"].str.strip().replace("", "0")
    records = [
        {
            f: (
                int(r[f])
                if f in ("tenure", "SeniorCitizen")
                else float(r[f])
                if f in ("MonthlyCharges", "TotalCharges")
                else r[f]
            )
            for f in FEATURE_NAMES
        }
        for r in raw.to_dict(orient="records")
    ]
    frame = records_to_frame(records)
    return raw, pipeline_of(home, tag).predict_proba(frame)[:, 1]


def test_batch_scores_equal_the_saved_pipeline_with_reasons(home, customers, tmp_path):
    mlops, summary = home
    tag = summary["tag"]
    out = tmp_path / "scores.csv"
    proc = batch(mlops, "--input", str(customers), "--output", str(out), "--reasons", "all")
    assert proc.returncode == 0, proc.stderr
    result = last_json_line(proc.stdout)
    assert list(result) == SUMMARY_KEYS
    assert result["rows_in"] == 8043 == result["rows_scored"] and result["rows_rejected"] == 0
    assert result["model"] == tag and result["output"] == str(out)
    raw, expected = expected_scores(mlops, tag, customers)
    scores = pd.read_csv(out, dtype={ID_COLUMN: str, "reason_1_value": str})
    assert list(scores.columns[:5]) == [ID_COLUMN, "churn_probability", "churn", "risk_percentile", "model"]
    assert (scores[ID_COLUMN] == raw[ID_COLUMN]).all()
    assert np.abs(scores["churn_probability"].to_numpy() - expected).max() <= TOLERANCE
    threshold = float(get_store_model(settings_from_env(state_env(mlops)), tag).info.metadata["threshold"])
    assert (scores["churn"] == (expected >= threshold)).all()
    assert (scores["model"] == tag).all()
    # the percentile in the model's own reference distribution
    reference = load_reference(settings_from_env(state_env(mlops)), tag)
    pipeline = pipeline_of(mlops, tag)
    ref = np.sort(pipeline.predict_proba(reference[list(FEATURE_NAMES)])[:, 1])
    # (the share of reference customers scoring at most as much; a tie within 1e-9 may count either way)
    proba = scores["churn_probability"].to_numpy()
    low, high = (100 * np.searchsorted(ref, proba + d, side="right") / len(ref) for d in (-1e-9, 1e-9))
    assert ((low - 1e-9 <= scores["risk_percentile"]) & (scores["risk_percentile"] <= high + 1e-9)).all()
    assert (high - low).mean() < 0.1  # ties are rare: the check has teeth
    # reasons: all 19, largest first, equal to the saved model's, and additive to the logit
    reasons = LinearReasons.for_pipeline(pipeline, reference)
    n = len(FEATURE_NAMES)
    shares = scores[[f"reason_{i}_contribution" for i in range(1, n + 1)]].to_numpy()
    assert (np.diff(shares, axis=1) <= 0).all()
    logit = np.log(expected / (1 - expected))
    assert np.abs(scores["baseline"].to_numpy() + shares.sum(axis=1) - logit).max() <= TOLERANCE
    assert np.abs(scores["baseline"] - reasons.baseline).max() <= TOLERANCE
    first = scores[[f"reason_{i}" for i in range(1, n + 1)]].iloc[0].tolist()
    assert sorted(first) == sorted(FEATURE_NAMES)
    assert scores.loc[0, "reason_1_value"] == raw.loc[0, scores.loc[0, "reason_1"]]


def test_parquet_in_and_out_give_the_same_numbers(home, customers, tmp_path):
    mlops, summary = home
    frame = pd.read_csv(customers, dtype=str, keep_default_na=False)
    frame["TotalCharges"] = frame["TotalCharges"].str.strip().replace("", "0")
    for column, kind in (("tenure", "int64"), ("SeniorCitizen", "int64"), ("MonthlyCharges", "float64")):
        frame[column] = frame[column].astype(kind)
    frame["TotalCharges"] = frame["TotalCharges"].astype("float64")
    source = tmp_path / "customers.parquet"
    frame.to_parquet(source, index=False)
    proc = batch(mlops, "--input", str(source), "--output", str(tmp_path / "s.parquet"), "--reasons", "3")
    assert proc.returncode == 0, proc.stderr
    scores = pd.read_parquet(tmp_path / "s.parquet")
    _, expected = expected_scores(mlops, summary["tag"], customers)
    assert np.abs(scores["churn_probability"].to_numpy() - expected).max() <= TOLERANCE
    assert scores["churn"].dtype == bool and len(scores) == 8043
    assert list(scores.columns[-10:]) == ["baseline"] + [
        f"reason_{i}{s}" for i in (1, 2, 3) for s in ("", "_value", "_contribution")
    ]


BAD_ROWS = {  # data row number (1-based, as the rejects file counts) -> what is wrong
    3: ("Contract", "Lifetime", "unknown value 'Lifetime'"),
    7: ("tenure", "-4", "invalid value '-4'"),
    8: ("MonthlyCharges", "abc", "invalid value 'abc'"),
    12: ("TotalCharges", " ", "invalid value ''"),  # blank but not a new customer
    15: ("SeniorCitizen", "2", "unknown value '2'"),
}


def write_with_bad_rows(path: Path, n: int = 200) -> pd.DataFrame:
    frame = pd.read_csv(DATA, dtype=str, keep_default_na=False).head(n)
    for row, (column, value, _) in BAD_ROWS.items():
        frame.loc[row - 1, column] = value
        if column == "TotalCharges":
            frame.loc[row - 1, "tenure"] = "5"
    text = frame.to_csv(index=False).splitlines()
    text.insert(20 + 1, "garbage,with,too,few,fields")  # becomes data row 21
    path.write_text("\n".join(text) + "\n")
    return frame


def test_rejects_are_counted_and_written_with_row_and_reason(home, tmp_path):
    mlops, summary = home
    source = tmp_path / "in.csv"
    frame = write_with_bad_rows(source)
    out = tmp_path / "out" / "scores.csv"
    proc = batch(mlops, "--input", str(source), "--output", str(out), "--max-bad-fraction", "0.05")
    assert proc.returncode == 0, proc.stderr
    result = last_json_line(proc.stdout)
    assert result["rows_in"] == 201 and result["rows_rejected"] == 6 and result["rows_scored"] == 195
    assert result["rows_in"] == result["rows_scored"] + result["rows_rejected"]
    rejects = pd.read_csv(result["rejects"], dtype=str, keep_default_na=False)
    assert Path(result["rejects"]).parent == out.parent
    assert rejects["row"].astype(int).tolist() == [3, 7, 8, 12, 15, 21]
    for row, (column, _, message) in BAD_ROWS.items():
        reason = rejects.loc[rejects["row"] == str(row), "reason"].item()
        assert column in reason and message in reason, reason
    assert "expected 21 fields, got 5" in rejects.loc[rejects["row"] == "21", "reason"].item()
    # every good row is scored, in order, with the pipeline's numbers
    scores = pd.read_csv(out, dtype={ID_COLUMN: str})
    good = frame.drop(index=[r - 1 for r in BAD_ROWS]).reset_index(drop=True)
    assert scores[ID_COLUMN].tolist() == good[ID_COLUMN].tolist()
    good_path = tmp_path / "good.csv"
    good.to_csv(good_path, index=False)
    _, expected = expected_scores(mlops, summary["tag"], good_path)
    assert np.abs(scores["churn_probability"].to_numpy() - expected).max() <= TOLERANCE


def test_more_bad_rows_than_tolerated_exits_2_naming_the_first_and_writes_nothing(home, tmp_path):
    mlops, _ = home
    source = tmp_path / "in.csv"
    write_with_bad_rows(source)
    out = tmp_path / "out" / "scores.csv"
    proc = batch(mlops, "--input", str(source), "--output", str(out))  # default 0.01: 6 of 201 is too many
    assert proc.returncode == 2
    assert "row 3" in proc.stderr and "Lifetime" in proc.stderr and "0.01" in proc.stderr, proc.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--input", "{tmp}/missing.csv", "no such file"),
        ("--output", "{tmp}/scores.json", ".json"),
        ("--model", "churn_model:nosuchversion", "nosuchversion"),
        ("--shard", "2/2", "--shard"),
        ("--reasons", "20", "--reasons"),
    ],
)
def test_bad_input_exits_2_with_a_message(home, customers, tmp_path, option, value, message):
    mlops, _ = home
    args = {"--input": str(customers), "--output": str(tmp_path / "s.csv")}
    args[option] = value.format(tmp=tmp_path)
    proc = batch(mlops, *[x for kv in args.items() for x in kv])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not list(tmp_path.iterdir())


def test_missing_columns_exit_2(home, tmp_path):
    mlops, _ = home
    source = tmp_path / "in.csv"
    pd.read_csv(DATA, dtype=str).drop(columns=["Contract"]).head(10).to_csv(source, index=False)
    proc = batch(mlops, "--input", str(source), "--output", str(tmp_path / "s.csv"))
    assert proc.returncode == 2 and "Contract" in proc.stderr, proc.stderr


def test_shards_are_disjoint_and_complete(home, customers, tmp_path):
    mlops, _ = home
    whole = tmp_path / "all.csv"
    assert batch(mlops, "--input", str(customers), "--output", str(whole)).returncode == 0
    parts, rows_in = [], 0
    for i in range(3):
        out = tmp_path / f"part-{i}.csv"
        proc = batch(mlops, "--input", str(customers), "--output", str(out), "--shard", f"{i}/3")
        assert proc.returncode == 0, proc.stderr
        rows_in += last_json_line(proc.stdout)["rows_in"]
        parts.append(pd.read_csv(out, dtype={ID_COLUMN: str}))
    ids = [set(p[ID_COLUMN]) for p in parts]
    assert all(len(p) > 2000 for p in parts) and rows_in == 8043
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    together = pd.concat(parts).set_index(ID_COLUMN).sort_index()
    expected = pd.read_csv(whole, dtype={ID_COLUMN: str}).set_index(ID_COLUMN).sort_index()
    pd.testing.assert_frame_equal(together, expected)


def big_input(path: Path, copies: int) -> None:
    with open(DATA, "rb") as fh:
        header, *rows = fh.read().splitlines(keepends=True)
    with open(path, "wb") as fh:
        fh.write(header)
        for _ in range(copies):
            fh.writelines(rows)


def test_no_partial_output_after_sigkill(home, tmp_path):
    mlops, _ = home
    source = tmp_path / "in" / "big.csv"
    source.parent.mkdir()
    big_input(source, 60)  # 422,580 rows
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoring.batch", "--input", str(source), "--output", str(out_dir / "s.csv"),
         "--reasons", "3"],
        cwd=ROOT, env=state_env(mlops), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    # wait until it writes (an open file under the output folder), then kill it mid-write
    deadline = time.monotonic() + 120
    writing = False
    while time.monotonic() < deadline and proc.poll() is None and not writing:
        try:
            targets = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        except OSError:
            targets = []
        writing = any(t.startswith(str(out_dir)) for t in targets)
        time.sleep(0.02)
    time.sleep(0.3)
    assert writing and proc.poll() is None, "the run ended before it could be killed: use a bigger input"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not out_dir.exists() or sorted(p.name for p in out_dir.iterdir()) == []
    # and a run to its end afterwards publishes both files
    assert batch(mlops, "--input", str(DATA), "--output", str(out_dir / "s.csv")).returncode == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["s.csv", "s.rejects.csv"]


def test_a_progress_bar_on_a_terminal_only(home, tmp_path):
    mlops, _ = home
    quiet = batch(mlops, "--input", str(DATA), "--output", str(tmp_path / "a.csv"))
    assert quiet.returncode == 0 and "100%" not in quiet.stderr and "\r" not in quiet.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoring.batch", "--input", str(DATA), "--output", str(tmp_path / "b.csv")],
        cwd=ROOT, env=state_env(mlops), stdout=subprocess.PIPE, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(60)
    os.close(leader)
    assert proc.returncode == 0
    assert b"100%" in seen and b"\r" in seen, seen[-500:]
    assert last_json_line(proc.stdout.read().decode())["rows_in"] == 7043


def test_a_model_the_fast_path_refuses_is_scored_by_its_pipeline_and_reasons_are_refused(tmp_path):
    mlops = tmp_path / "home"
    proc = run_cli("tests.models", "unsupported", env=state_env(mlops))
    assert proc.returncode == 0, proc.stderr
    tag = proc.stdout.strip().splitlines()[-1]
    out = tmp_path / "s.csv"
    proc = batch(mlops, "--input", str(DATA), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    _, expected = expected_scores(mlops, tag, DATA)
    assert np.abs(pd.read_csv(out)["churn_probability"].to_numpy() - expected).max() <= TOLERANCE
    proc = batch(mlops, "--input", str(DATA), "--output", str(tmp_path / "r.csv"), "--reasons", "3")
    assert proc.returncode == 2 and "numeric preprocessing" in proc.stderr, proc.stderr
    assert not (tmp_path / "r.csv").exists()

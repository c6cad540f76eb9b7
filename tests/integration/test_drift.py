"""The drift check with the real alibi-detect detector on the real data, as users run it."""

from __future__ import annotations

import http.server
import json
import re
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from churn.predictionlog import PredictionLog
from churn.schema import FEATURE_NAMES, read_customers_csv
from churn.serving import ScoreResult
from churn.settings import settings_from_env
from tests.support import DATA, last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow

TOKEN = "sentinel-token-7f3a9c"  # must never appear in any output


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("drift")
    train(home)
    return home


@pytest.fixture(scope="module")
def held_out():
    """The rows training held out (same split as training.train with seed 42), as raw CSV rows."""
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    labels = raw["Churn"]
    _, test = train_test_split(raw, test_size=0.2, stratify=labels, random_state=42)
    return test.reset_index(drop=True)


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "current.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def drift(home: Path, *args: str, **env: str):
    proc = run_cli("monitoring.drift", *args, env=state_env(home, **env))
    summary = last_json_line(proc.stdout) if proc.stdout.strip() else None
    return proc, summary


def test_held_out_sample_shows_no_drift(home, held_out, tmp_path):
    proc, summary = drift(home, "--current", str(write(tmp_path, held_out.sample(800, random_state=1))))
    assert proc.returncode == 0, proc.stderr
    assert summary["drift"] is False and summary["drifted_features"] == []
    report = json.loads(Path(summary["report"]).read_text())
    assert report["n_current"] == 800 and report["n_reference"] == 5634
    assert set(report["features"]) == set(FEATURE_NAMES)
    assert all(f["p_value"] > report["threshold"] for f in report["features"].values())


def _shifted(held_out, kind):
    df = held_out.copy()
    if kind == "sub-population":  # only month-to-month fibre customers
        return df[(df["Contract"] == "Month-to-month") & (df["InternetService"] == "Fiber optic")]
    if kind == "scaled numeric":
        df["MonthlyCharges"] = (pd.to_numeric(df["MonthlyCharges"]) * 1.3).round(2).astype(str)
        return df
    if kind == "category mix":
        rng = np.random.default_rng(0)
        df["PaymentMethod"] = np.where(rng.random(len(df)) < 0.8, "Mailed check", df["PaymentMethod"])
        return df
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "must_drift", "must_not_drift"),
    [
        ("sub-population", {"Contract", "InternetService"}, {"gender"}),
        ("scaled numeric", {"MonthlyCharges"}, {"gender", "Contract", "tenure", "PaymentMethod"}),
        ("category mix", {"PaymentMethod"}, {"gender", "MonthlyCharges", "Contract", "tenure"}),
    ],
)
def test_shifted_data_drifts_on_the_right_features(
    home, held_out, tmp_path, kind, must_drift, must_not_drift
):
    current = write(tmp_path, _shifted(held_out, kind))
    proc, summary = drift(home, "--current", str(current), "--fail-on-drift")
    assert proc.returncode == 1, proc.stderr  # --fail-on-drift
    assert summary["drift"] is True
    assert must_drift <= set(summary["drifted_features"])
    assert not must_not_drift & set(summary["drifted_features"])
    assert "drift: YES" in proc.stderr


def test_unseen_category_is_reported_not_crashed_on(home, held_out, tmp_path):
    df = held_out.copy()
    df.loc[df.index[:200], "InternetService"] = "Satellite"
    proc, summary = drift(home, "--current", str(write(tmp_path, df)))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(summary["report"]).read_text())
    assert report["features"]["InternetService"]["unseen_categories"] == {"Satellite": 200}
    assert report["unseen_categories"] == {"InternetService": {"Satellite": 200}}
    assert "InternetService" in summary["drifted_features"]
    assert "Satellite" in proc.stderr


def test_too_few_rows_gives_no_verdict(home, held_out, tmp_path):
    proc, summary = drift(home, "--current", str(write(tmp_path, held_out.head(49))))
    assert proc.returncode == 2 and summary is None
    assert "only 49 current record(s)" in proc.stderr and "at least 50" in proc.stderr
    assert drift(home, "--current", str(write(tmp_path, held_out.head(50))))[0].returncode == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t, h: t / "missing.csv", "no such file"),
        (lambda t, h: write(t, h.drop(columns=["tenure"])), "missing column(s) ['tenure']"),
        (lambda t, h: write(t, h.assign(Extra=1)), "unknown column(s) ['Extra']"),
        (lambda t, h: write(t, h.assign(tenure="soon")), "'tenure', row 1: not a number"),
        (lambda t, h: _bytes(t, "bad.csv", bytes(range(256)) * 40), ""),
        (lambda t, h: _bytes(t, "empty.csv", b""), "empty file"),
        (
            lambda t, h: _bytes(t, "header.csv", (",".join(h.columns) + "\n").encode()),
            "only 0 current record(s)",
        ),
        (
            lambda t, h: _bytes(t, "semicolons.csv", h.to_csv(sep=";", index=False).encode()),
            "missing column(s)",
        ),
        (lambda t, h: _bytes(t, "truncated.csv", h.to_csv(index=False).encode()[:2000]), ""),
    ],
    ids=[
        "missing",
        "no-column",
        "extra-column",
        "non-numeric",
        "binary",
        "empty",
        "header-only",
        "semicolons",
        "truncated",
    ],
)
def test_bad_files_exit_2_with_a_message_and_write_nothing(home, held_out, tmp_path, make, message):
    before = sorted(p.name for p in (home / "reports").iterdir())
    proc, summary = drift(home, "--current", str(make(tmp_path, held_out)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (home / "reports").iterdir()) == before


def _bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _log_with_service_code(home: Path, frame: pd.DataFrame, folder: Path) -> None:
    """Write the prediction log with the service's own writer."""
    settings = settings_from_env(state_env(home)).model_copy(update={"mlops_home": folder.parent})
    log = PredictionLog(settings)
    assert log.folder == folder
    data = read_csv_frame(frame)
    records = data.to_dict(orient="records")
    for start in range(0, len(records), 25):
        chunk = records[start : start + 25]
        result = ScoreResult(np.full(len(chunk), 0.3), np.zeros(len(chunk), bool), ("churn_model:test",))
        log.append("req", result, chunk, [None] * len(chunk))
    log.close()


def read_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as fh:
        path = Path(fh.name)
    frame.to_csv(path, index=False)
    try:
        return read_customers_csv(str(path), require_label=False).features
    finally:
        path.unlink()


def test_prediction_log_written_by_the_service_is_the_default_input(home, held_out):
    _log_with_service_code(home, held_out.head(300), home / "predictions")
    assert list((home / "predictions").glob("*.jsonl"))
    proc, summary = drift(home)  # default --current: $MLOPS_HOME/predictions
    assert proc.returncode == 0, proc.stderr
    assert summary["n_current"] == 300 and summary["drift"] is False
    latest = home / "reports" / "latest"
    assert latest.is_symlink() and (latest / "drift_report.json").exists()
    assert Path(summary["report"]).parent.resolve() == latest.resolve()
    assert drift(home, "--since", "1h")[1]["n_current"] == 300
    proc, _ = drift(home, "--since", "2000-01-01T00:00:00Z", "--max-records", "60")
    assert proc.returncode == 0 and last_json_line(proc.stdout)["n_current"] == 60
    assert drift(home, "--since", "yesterday")[0].returncode == 2


def test_unreadable_log_lines_are_counted_or_refused(home, held_out, tmp_path):
    folder = tmp_path / "predictions"
    _log_with_service_code(home, held_out.head(400), folder)
    path = next(folder.glob("*.jsonl"))
    with open(path, "a") as fh:
        fh.write("{torn line\n")
    proc, summary = drift(home, "--current", str(folder), "--output-dir", str(tmp_path / "r1"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r1" / "drift_report.json").read_text())["unreadable_lines"] == 1
    with open(path, "a") as fh:
        fh.write("garbage\n" * 50)
    proc, _ = drift(home, "--current", str(path), "--output-dir", str(tmp_path / "r2"))
    assert proc.returncode == 2 and "51 of 451 lines" in proc.stderr
    assert not (tmp_path / "r2").exists()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.external: list[str] = []  # what a self-contained page must not load
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        link = a.get("src") or a.get("href") or ""
        if tag in ("img", "script", "link", "iframe") or link.startswith("http"):
            self.external.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_report_files_are_complete_and_the_html_is_self_contained(home, held_out, tmp_path):
    out = tmp_path / "report"
    drift(
        home,
        "--current",
        str(write(tmp_path, _shifted(held_out, "scaled numeric"))),
        "--output-dir",
        str(out),
    )
    report = json.loads((out / "drift_report.json").read_text())
    assert {"drift", "p_val", "threshold", "model", "n_reference", "n_current", "created", "features"} <= set(
        report
    )
    assert report["model"].startswith("churn_model:") and report["created"].endswith("Z")
    assert report["threshold"] == pytest.approx(0.05 / 19)
    for name, f in report["features"].items():
        assert f["test"] == ("KS" if name in ("tenure", "MonthlyCharges", "TotalCharges") else "Chi2")
        assert set(f) >= {"test", "statistic", "p_value", "drift"}
    page = (out / "drift_report.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert parser.external == []
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 19
    for svg in charts:
        root = ET.fromstring(svg)  # well-formed SVG
        title = root.find("{http://www.w3.org/2000/svg}title").text
        bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if float(r.get("height")) > 9]
        assert title.endswith(" reference vs current")
        # both series drawn with positive heights, and no bar outside the chart
        assert {r.get("class") for r in bars} == {"reference", "current"}, title
        assert all(0 <= float(r.get("y")) <= float(root.get("height")) for r in bars), title
    tenure = next(svg for svg in charts if "<title>tenure " in svg)
    assert tenure.count('class="reference"') == 30 + 1  # 30 bins and the legend
    text = " ".join(parser.text)
    assert text.strip().startswith("Churn drift report") or "DRIFT DETECTED" in text
    assert page.index("DRIFT DETECTED") < page.index("<table")  # verdict first
    assert page.index(">MonthlyCharges<") < page.index(">gender<")  # drifted features first
    assert "class='drift'" in page
    prom = (out / "drift_metrics.prom").read_text()
    assert "churn_drift_detected 1" in prom and 'churn_drift_p_value{feature="MonthlyCharges"}' in prom


class _Webhook(http.server.BaseHTTPRequestHandler):
    calls: list[dict] = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append({"auth": self.headers.get("Authorization"), "body": json.loads(body)})
        code = 500 if len(type(self).calls) <= type(self).fail_first else 200
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Webhook.calls = []
    _Webhook.fail_first = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _Webhook
    server.shutdown()


def _all_output_text(home: Path, proc) -> str:
    texts = [proc.stdout, proc.stderr]
    for sub in ("reports", "logs"):
        for path in (home / sub).rglob("*"):
            if path.is_file():
                texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def test_alert_posts_the_summary_with_the_bearer_token_after_retries(home, held_out, tmp_path, webhook):
    server, handler = webhook
    handler.fail_first = 2
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/drift"
    current = write(tmp_path, _shifted(held_out, "category mix"))
    proc, summary = drift(
        home, "--current", str(current), "--alert", MONITORING_WEBHOOK_URL=url, MONITORING_API_TOKEN=TOKEN
    )
    assert proc.returncode == 0, proc.stderr
    assert summary["alert"]["sent"] is True and summary["alert"]["attempts"] == 3
    assert len(handler.calls) == 3 and all(c["auth"] == f"Bearer {TOKEN}" for c in handler.calls)
    assert handler.calls[-1]["body"]["drift"] is True
    assert "PaymentMethod" in handler.calls[-1]["body"]["drifted_features"]
    assert TOKEN not in _all_output_text(home, proc)


def test_alert_to_a_dead_endpoint_times_out_cleanly(home, held_out, tmp_path):
    from tests.support import free_port

    url = f"http://127.0.0.1:{free_port()}/nobody-listens?secret=sentinel-url-secret"
    proc, summary = drift(
        home,
        "--current",
        str(write(tmp_path, _shifted(held_out, "category mix"))),
        "--alert",
        MONITORING_WEBHOOK_URL=url,
        MONITORING_API_TOKEN=TOKEN,
    )
    assert proc.returncode == 0, proc.stderr  # the check ran; the alert failure is reported
    assert summary["alert"]["sent"] is False and summary["alert"]["attempts"] >= 2
    assert "unreachable" in summary["alert"]["error"]
    text = _all_output_text(home, proc)
    assert TOKEN not in text and "sentinel-url-secret" not in text


def test_alert_without_configuration_says_so_and_still_checks(home, held_out, tmp_path):
    proc, summary = drift(
        home, "--current", str(write(tmp_path, _shifted(held_out, "category mix"))), "--alert"
    )
    assert proc.returncode == 0
    assert "alerting is not configured" in proc.stderr
    assert summary["drift"] is True and summary["alert"]["sent"] is False


def test_alert_module_gives_up_inside_its_time_box():
    import time

    from churn.alert import send_alert
    from tests.support import free_port

    started = time.monotonic()
    result = send_alert(
        f"http://127.0.0.1:{free_port()}/", TOKEN, {"drift": True}, attempts=10, time_box=1.5, backoff=0.4
    )
    assert result["sent"] is False and time.monotonic() - started < 3
    assert TOKEN not in json.dumps(result)


def test_no_verdict_is_not_a_failure_for_the_scheduled_job(home, held_out, tmp_path):
    """--allow-no-verdict (the CronJob): too few records is exit 0 and says so; bad input stays 2."""
    proc, summary = drift(home, "--current", str(write(tmp_path, held_out.head(10))), "--allow-no-verdict")
    assert proc.returncode == 0 and summary == {
        "drift": None,
        "verdict": False,
        "reason": summary["reason"],
    }
    assert "only 10 current record(s)" in summary["reason"] and "no verdict" in proc.stderr
    proc, _ = drift(home, "--current", str(tmp_path / "missing.csv"), "--allow-no-verdict")
    assert proc.returncode == 2

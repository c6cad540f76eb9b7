"""Report files. Drift: drift_report.json, a self-contained drift_report.html, and
drift_metrics.prom. Performance: the self-contained performance_report.html, beside the JSON that
churn.performance_check builds (churn.reports' shape). Both reports' folders are written here.

A report folder is written under a temporary name and renamed into place, so a reader (or the
`latest` link) never sees half a report.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.metrics import drift_textfile
from churn.reports import DRIFT_REPORT_JSON, LATEST_DRIFT, DriftReport, report_json
from churn.schema import FEATURES_BY_NAME

REPORT_JSON = DRIFT_REPORT_JSON
DRIFT_REPORT_HTML = "drift_report.html"
REPORT_PROM = "drift_metrics.prom"
PERFORMANCE_REPORT_HTML = "performance_report.html"
SHOWN = ("roc_auc", "f1", "precision", "recall", "log_loss", "brier", "pr_auc")  # performance metrics


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # "reference" or "current"


@dataclass(frozen=True)
class Chart:
    """One feature's reference-vs-current distribution, drawn as inline SVG by the template."""

    title: str
    y_label: str
    y_max: float
    bars: list[Bar]
    x_ticks: list[tuple[float, str]]  # position, label
    rotate_ticks: bool


CHART_W, CHART_H, PLOT_L, PLOT_R, PLOT_T, PLOT_B = 420, 210, 46, 410, 22, 150
HIST_BINS = 30


def _bars(values: list[tuple[float, float]], y_max: float, slot: float, group_width: float) -> list[Bar]:
    """Two bars (reference, current) per slot, side by side, scaled to the plot area."""
    scale = (PLOT_B - PLOT_T) / y_max if y_max > 0 else 0.0
    bars = []
    for i, pair in enumerate(values):
        for j, (series, v) in enumerate(zip(("reference", "current"), pair, strict=True)):
            h = v * scale
            x = PLOT_L + i * slot + (slot - group_width) / 2 + j * group_width / 2
            bars.append(
                Bar(round(x, 1), round(PLOT_B - h, 1), round(group_width / 2, 1), round(h, 1), series)
            )
    return bars


def drift_chart(name: str, reference: pd.DataFrame, current: pd.DataFrame) -> Chart:
    """Shares per category, or a 30-bin density histogram: computed here with numpy, drawn as
    SVG. matplotlib took 6.8 s of a 12-s drift check for these 19 figures (cProfile); this, 0.1 s."""
    feature = FEATURES_BY_NAME[name]
    width = PLOT_R - PLOT_L
    if feature.is_categorical:
        ref = reference[name].astype(str).value_counts(normalize=True)
        cur = current[name].astype(str).value_counts(normalize=True)
        known = [str(c) for c in feature.categories]
        cats = known + sorted(set(cur.index) - set(known))
        values = [(float(ref.get(c, 0.0)), float(cur.get(c, 0.0))) for c in cats]
        slot = width / len(cats)
        y_max = max(max(pair) for pair in values) or 1.0
        ticks = [(round(PLOT_L + (i + 0.5) * slot, 1), c) for i, c in enumerate(cats)]
        return Chart(name, "share", y_max, _bars(values, y_max, slot, slot * 0.8), ticks, True)
    ref_x, cur_x = reference[name].to_numpy(float), current[name].to_numpy(float)
    lo, hi = float(min(ref_x.min(), cur_x.min())), float(max(ref_x.max(), cur_x.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, HIST_BINS + 1)
    ref_d, _ = np.histogram(ref_x, bins=edges, density=True)
    cur_d, _ = np.histogram(cur_x, bins=edges, density=True)
    values = [(float(a), float(b)) for a, b in zip(ref_d, cur_d, strict=True)]
    y_max = max(float(ref_d.max()), float(cur_d.max())) or 1.0
    ticks = [(PLOT_L, f"{edges[0]:.4g}"), (PLOT_R, f"{edges[-1]:.4g}")]
    return Chart(
        name, "density", y_max, _bars(values, y_max, width / HIST_BINS, width / HIST_BINS), ticks, False
    )


def render_drift_html(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame) -> str:
    import jinja2

    data = report.model_dump(exclude_unset=True)  # the template reads the report as its file has it
    order = sorted(data["features"].items(), key=lambda kv: (not kv[1]["drift"], kv[1]["p_value"]))
    env = jinja2.Environment(loader=jinja2.PackageLoader("churn", "templates"), autoescape=True)
    return env.get_template("drift_report.html.j2").render(
        report=data,
        order=order,
        drifted=[name for name, f in order if f["drift"]],
        charts={name: drift_chart(name, reference, current) for name, _ in order},
        size={"w": CHART_W, "h": CHART_H, "l": PLOT_L, "r": PLOT_R, "t": PLOT_T, "b": PLOT_B},
    )


def write_report(
    report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, output_dir: Path
) -> Path:
    """Write the drift report's three files into `output_dir` atomically; returns the folder."""
    return write_report_folder(
        {
            REPORT_JSON: report_json(report),
            DRIFT_REPORT_HTML: render_drift_html(report, reference, current),
            REPORT_PROM: drift_textfile(report),
        },
        output_dir,
    )


def render_performance_html(report: dict[str, Any]) -> str:
    """`report`: as its file has it (PerformanceReport's dump)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("churn", "templates"), autoescape=True)
    return env.get_template("performance_report.html.j2").render(
        report=report, plots=_plots(report), shown=SHOWN, band=report["estimate_band"]
    )


def _plots(report: dict[str, Any]) -> dict[str, str]:
    """Per metric, estimated (line) and realized (point) values of every version over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    for metric, label in (("f1", "F1"), ("roc_auc", "ROC AUC")):
        fig, ax = plt.subplots(figsize=(7.5, 3.0), dpi=80)
        for i, (tag, m) in enumerate(report["models"].items()):
            color = f"C{i}"
            ends = [dt.datetime.fromisoformat(c["end"].replace("Z", "+00:00")) for c in m["chunks"]]
            ax.plot(
                ends,
                [c[f"estimated_{metric}"] for c in m["chunks"]],
                "-o",
                color=color,
                ms=3,
                label=f"{tag} estimated",
            )
            if m["realized"] and m["realized"].get(metric) is not None and ends:
                ax.plot([ends[-1]], [m["realized"][metric]], "D", color=color, ms=8, label=f"{tag} realized")
            if m["training"].get(metric) is not None and ends:
                ax.hlines(m["training"][metric], ends[0], ends[-1], colors=color, linestyles=":", lw=1)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.set_title(
            f"{label}: estimated over time (line), realized (diamond), at training (dotted)", fontsize=9
        )
        ax.legend(fontsize=6, loc="lower left")
        fig.autofmt_xdate()
        plots[metric] = png_base64(fig)
    return plots


def png_base64(fig) -> str:
    """A matplotlib figure as an inline PNG (base64), closed afterwards."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report_folder(files: dict[str, str], output_dir: Path) -> Path:
    """Write a report's files into `output_dir` atomically (a temporary folder renamed into
    place: a reader never sees half a report); returns the folder."""
    output_dir = output_dir.absolute()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        os.chmod(tmp, 0o755)
        if output_dir.exists():
            if not output_dir.is_dir() or any(output_dir.iterdir()):
                raise FileExistsError(f"{output_dir} exists and is not an empty folder")
            output_dir.rmdir()
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def point_latest(reports_dir: Path, target: Path, name: str = LATEST_DRIFT) -> Path:
    """Make `reports_dir/<name>` a relative link to `target`, replaced atomically."""
    link = reports_dir / name
    tmp = reports_dir / f".{name}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, reports_dir), tmp)
    os.replace(tmp, link)
    return link

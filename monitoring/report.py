"""Drift reports: drift_report.json, a self-contained drift_report.html, and drift_metrics.prom.

A report folder is written under a temporary name and renamed into place, so a reader (or the
`latest` link) never sees half a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.schema import FEATURES_BY_NAME
from churn.settings import DRIFT_REPORT_JSON

REPORT_JSON = DRIFT_REPORT_JSON
REPORT_HTML = "drift_report.html"
REPORT_PROM = "drift_metrics.prom"


def _plot(name: str, reference: pd.DataFrame, current: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 2.6), dpi=80)
    feature = FEATURES_BY_NAME[name]
    if feature.is_categorical:
        ref = reference[name].astype(str).value_counts(normalize=True)
        cur = current[name].astype(str).value_counts(normalize=True)
        cats = [str(c) for c in feature.categories] + sorted(
            set(cur.index) - {str(c) for c in feature.categories}
        )
        x = np.arange(len(cats))
        ax.bar(x - 0.2, [ref.get(c, 0.0) for c in cats], 0.4, label="reference", color="#4c78a8")
        ax.bar(x + 0.2, [cur.get(c, 0.0) for c in cats], 0.4, label="current", color="#f58518")
        ax.set_xticks(x, cats, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("share")
    else:
        ref, cur = reference[name].to_numpy(float), current[name].to_numpy(float)
        lo, hi = float(min(ref.min(), cur.min())), float(max(ref.max(), cur.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(ref, bins=bins, density=True, alpha=0.55, label="reference", color="#4c78a8")
        ax.hist(cur, bins=bins, density=True, alpha=0.55, label="current", color="#f58518")
        ax.set_ylabel("density")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7)
    return png_base64(fig)


def png_base64(fig) -> str:
    """A matplotlib figure as an inline PNG (base64), closed afterwards."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(report: dict[str, Any], reference: pd.DataFrame, current: pd.DataFrame) -> str:
    verdict = "DRIFT DETECTED" if report["drift"] else "No drift detected"
    color = "#b00020" if report["drift"] else "#1b5e20"
    order = sorted(report["features"].items(), key=lambda kv: (not kv[1]["drift"], kv[1]["p_value"]))
    drifted = [name for name, f in order if f["drift"]]
    listed = ": " + html.escape(", ".join(drifted)) if drifted else ""
    rows = []
    for name, f in order:
        unseen = f.get("unseen_categories")
        unseen_html = (
            f"<div class='unseen'>unseen categories: {html.escape(json.dumps(unseen))}</div>"
            if unseen
            else ""
        )
        rows.append(
            f"<tr class='{'drift' if f['drift'] else 'ok'}'><td><b>{html.escape(name)}</b>{unseen_html}</td>"
            f"<td>{f['test']}</td><td>{f['statistic']:.4g}</td><td>{f['p_value']:.3g}</td>"
            f"<td>{'yes' if f['drift'] else 'no'}</td>"
            f"<td><img alt='{html.escape(name)} reference vs current' "
            f"src='data:image/png;base64,{_plot(name, reference, current)}'></td></tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Churn drift report {html.escape(report["created"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.verdict {{ font-size: 1.8em; font-weight: bold; color: {color}; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
tr.drift {{ background: #fde8ea; }} .unseen {{ color: #b00020; font-size: 0.85em; }}
</style></head><body>
<div class="verdict">{verdict}</div>
<p>{len(drifted)} of {len(order)} features drifted{listed}.</p>
<p>Model <code>{html.escape(str(report["model"]))}</code> &middot; reference {report["n_reference"]} rows
&middot; current {report["n_current"]} rows &middot; p-value {report["p_val"]} with Bonferroni correction
(per-feature threshold {report["threshold"]:.3g}) &middot; created {html.escape(report["created"])}</p>
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>drift</th>
<th>reference (blue) vs current (orange)</th></tr>
{"".join(rows)}
</table></body></html>
"""


def render_prometheus(report: dict[str, Any]) -> str:
    """Text exposition format (node-exporter textfile style); the service exposes the same gauges."""
    lines = [
        "# HELP churn_drift_detected 1 if the latest drift check found drift",
        "# TYPE churn_drift_detected gauge",
        f"churn_drift_detected {int(report['drift'])}",
        "# HELP churn_drift_p_value p-value of the latest drift test per feature",
        "# TYPE churn_drift_p_value gauge",
    ]
    lines += [
        f'churn_drift_p_value{{feature="{n}"}} {f["p_value"]:.6g}' for n, f in report["features"].items()
    ]
    lines += [
        "# HELP churn_drift_current_rows rows in the latest drift check's current data",
        "# TYPE churn_drift_current_rows gauge",
        f"churn_drift_current_rows {report['n_current']}",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], reference: pd.DataFrame, current: pd.DataFrame, output_dir: Path
) -> Path:
    """Write the drift report's three files into `output_dir` atomically; returns the folder."""
    return write_report_folder(
        {
            REPORT_JSON: json.dumps(report, indent=2) + "\n",
            REPORT_HTML: render_html(report, reference, current),
            REPORT_PROM: render_prometheus(report),
        },
        output_dir,
    )


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


def point_latest(reports_dir: Path, target: Path, name: str = "latest") -> Path:
    """Make `reports_dir/<name>` a relative link to `target`, replaced atomically."""
    link = reports_dir / name
    tmp = reports_dir / f".{name}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, reports_dir), tmp)
    os.replace(tmp, link)
    return link

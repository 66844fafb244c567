"""End to end on a real tiny sweep: loading, the bootstrap's agreement with the reported metrics,
the report CLI and the notebook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import analysis
from analysis.stats import example_stats, ratio
from trainables.tasks.schema import HEADLINE_METRIC, LANGS, TASKS

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "analysis" / "notebooks" / "sweep_report.ipynb"
LABELS = {"sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5"}

pytestmark = pytest.mark.e2e


def test_load_and_tables_on_a_real_sweep(sweep_dir):
    results = analysis.load(sweep_dir)
    assert set(results["label"]) == LABELS and set(results["seed"]) == {1, 2}
    assert results["experiment"].eq(sweep_dir.name).all()
    t = analysis.delta_table(results)
    assert list(t.values.index) == [*TASKS, "Avg"]
    assert {"Δ distill λ=0.05", "Δ distill λ=0.5", "Δ control λ=0.05"} <= set(t.values.columns)
    assert t.std is not None  # two seeds
    tables = analysis.study_tables(results)
    assert all(isinstance(v, analysis.Table) for v in tables.values()), {k: v for k, v in tables.items() if isinstance(v, str)}


def test_predictions_reproduce_the_reported_metrics(sweep_dir):
    """The per-example sums the bootstrap resamples give exactly what each trial reported."""
    results = analysis.load(sweep_dir)
    preds = analysis.load_predictions(sweep_dir)
    final = results[(results["split"] == "test") & results["final"] & results["lang"].isin(LANGS)]
    reported = final.set_index(["trial_id", "task", "lang", "metric"])["value"]
    checked = 0
    for (trial, task, lang), g in preds.groupby(["trial_id", "task", "lang"]):
        p = [json.loads(x) for x in g["prediction"]]
        r = [json.loads(x) for x in g["reference"]]
        num, den = example_stats(task, lang, p, r)
        assert ratio(num.sum(), den.sum()) == pytest.approx(reported[(trial, task, lang, HEADLINE_METRIC[task])])
        checked += 1
    assert checked == 8 * len(TASKS) * len(LANGS)
    boot = analysis.bootstrap(preds, n_boot=100, seed=1)
    assert set(boot.conditions()) == LABELS
    iv = boot.interval("distill λ=0.05", "sft")
    assert (iv["low"] <= iv["high"]).all()


def test_report_cli_on_a_real_sweep(sweep_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "analysis", "report", str(sweep_dir), "--format", "html",
                          "--out", str(tmp_path), "--n-boot", "100", "--link-images"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "Not available" not in page and "base64" not in page
    for name in ("lambda_sweep", "language_heatmaps", "training_curves", "ce_curves"):
        assert f'src="plots/{name}.png"' in page and (tmp_path / "plots" / f"{name}.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path)], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a lamtune experiment" in bad.stderr


def test_notebook_runs_on_a_real_sweep(sweep_dir, monkeypatch):
    monkeypatch.setenv("LAMTUNE_EXPERIMENT", str(sweep_dir))
    monkeypatch.setenv("LAMTUNE_N_BOOT", "100")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert "| **Avg** |" in markdown and "Not available" not in markdown and "No figure" not in markdown
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
    assert os.environ["LAMTUNE_EXPERIMENT"] == str(sweep_dir)

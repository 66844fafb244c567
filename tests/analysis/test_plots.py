"""Figures: one panel per task (+ Avg), the data they should show, PNG on disk."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import AnalysisError, plots
from analysis import tables as tb
from analysis.order import label_ranks


def test_lambda_sweep_panels_log_x_and_sft_line(results):
    fig = plots.lambda_sweep(results)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["NLI (Acc)", "QA (F1)", "NER (F1)", "POS (Acc)", "Avg"]
    assert all(a.get_xscale() == "log" for a in axes)
    avg = axes[-1]
    series = {c.get_label(): c.lines[0] for c in avg.containers}  # errorbar containers
    assert set(series) == {"distill", "control"}
    distill = [series["distill"]]
    assert list(distill[0].get_xdata()) == [0.05, 0.5] and list(series["control"].get_xdata()) == [0.05]
    table = tb.delta_vs_sft(tb.headline_scores(results))
    np.testing.assert_allclose(distill[0].get_ydata(), [table.at["Avg", "distill λ=0.05"], table.at["Avg", "distill λ=0.5"]])
    sft = [line for line in avg.get_lines() if line.get_label() == "sft"]
    assert sft[0].get_ydata()[0] == pytest.approx(table.at["Avg", "sft"])


def test_heatmaps_training_and_ce_curves(results):
    heat = plots.language_heatmaps(results)
    images = [a for a in heat.axes if a.get_images()]
    assert [a.get_title() for a in images] == ["NLI (Acc)", "QA (F1)", "NER (F1)", "POS (Acc)"]
    grid = images[0].get_images()[0].get_array()
    expected = tb.per_language(tb.headline_scores(results), "nli", baseline=None)
    np.testing.assert_allclose(np.asarray(grid), expected.to_numpy())
    train = plots.training_curves(results)
    assert [a.get_title() for a in train.axes] == ["CE", "KD", "λ NLI", "λ QA", "λ NER", "λ POS"]
    ce = plots.ce_curves(results)
    assert [a.get_title() for a in ce.axes] == ["NLI", "QA", "NER", "POS"]
    assert len(ce.axes[0].get_lines()) == 3 * 3  # student, teacher, crossover line per teacher condition


def test_save_writes_a_png(results, tmp_path):
    path = plots.save(plots.lambda_sweep(results), tmp_path / "sub" / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_refuse_data_they_cannot_show(results):
    with pytest.raises(AnalysisError, match="no fixed-λ distill"):
        plots.lambda_sweep(results[results["condition"] != "distill"])
    with pytest.raises(AnalysisError, match="no training losses"):
        plots.training_curves(results[results["split"] != "train"])
    with pytest.raises(AnalysisError, match="no teacher-vs-student"):
        plots.ce_curves(results[results["metric"] != "teacher_ce"])


def test_curves_and_colors_follow_the_trial_columns_not_the_label_text(results):
    misleading = {"sft": "zz baseline", "control λ=0.05": "distill λ=9", "distill λ=0.05": "λ=7 big",
                  "distill λ=0.5": "distill λ=0.01"}
    r = results.assign(label=results["label"].map(misleading))
    want = ["zz baseline", "distill λ=9", "λ=7 big", "distill λ=0.01"]
    ce_panel = plots.training_curves(r).axes[0]
    assert [line.get_label() for line in ce_panel.get_lines()] == want
    palette = plots.colors(want, label_ranks(r))
    assert [line.get_color() for line in ce_panel.get_lines()] == [palette[lab] for lab in want]
    assert list(palette) == want
    teacher = [line.get_label() for line in plots.ce_curves(r).axes[0].get_lines() if line.get_label()[0] != "_"]
    assert teacher == [f"{lab} ({m})" for lab in want[1:] for m in ("student", "teacher")]

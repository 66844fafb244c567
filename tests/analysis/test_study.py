"""The study's tables with statistics: values from tables.py, ± from seeds, intervals from the bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import (
    Table, best_lambda_table, bootstrap, ce_table, delta_table, gap_table, language_table,
    learned_lambda_table, render, study_tables,
)
from analysis import tables as tb
from analysis.stats import seed_std


@pytest.fixture
def boot(predictions):
    return bootstrap(predictions, n_boot=200, seed=3)


def test_delta_table_combines_values_std_and_intervals(results, boot):
    t = delta_table(results, boot)
    pd.testing.assert_frame_equal(t.values, tb.delta_vs_sft(tb.headline_scores(results)))
    by_seed = tb.headline_scores(results, by_seed=True)
    direct_std = seed_std(by_seed, tb.delta_vs_sft, keep=["sft"])
    assert t.std.loc["ner", "distill λ=0.5"] == pytest.approx(direct_std.loc["ner", "distill λ=0.5"])
    iv = boot.interval("control λ=0.05", "sft")
    assert t.low.loc["Avg", "Δ control λ=0.05"] == iv.at["Avg", "low"]
    assert t.high.loc["qa", "Δ control λ=0.05"] == iv.at["qa", "high"]
    assert t.low["sft"].isna().all()  # intervals only for Δ cells
    assert t.best_cells() >= {("Avg", "distill λ=0.05")} and ("Avg", "Δ distill λ=0.05") not in t.best_cells()
    md = render(t, "md")
    marked = [line for line in md.splitlines() if line.startswith("| **Avg**")][0]
    # Significant Δs carry †: exactly those whose interval excludes 0.
    excl = [(iv_.at["Avg", "low"] > 0 or iv_.at["Avg", "high"] < 0)
            for iv_ in (boot.interval(c, "sft") for c in ("control λ=0.05", "distill λ=0.05", "distill λ=0.5"))]
    assert marked.count("†") == sum(excl)
    assert "paired bootstrap" in t.note and "± std over seeds" in t.note


def test_delta_table_without_bootstrap_or_baseline(results):
    t = delta_table(results)
    assert t.low is None and "bootstrap" not in t.note
    with pytest.raises(tb.TableError, match="no 'sft' baseline"):
        delta_table(results[results["label"] != "sft"])


def test_language_table_interval_is_the_task_delta(results, boot):
    t = language_table(results, "ner", boot)
    assert list(t.values.columns) == ["EN", "HI", "Avg", "Δ vs sft"]
    iv = boot.interval("distill λ=0.05", "sft")
    assert t.low.loc["distill λ=0.05", "Δ vs sft"] == iv.at["ner", "low"]
    assert np.isnan(t.low.loc["sft", "Δ vs sft"])
    assert t.best == "column" and ("distill λ=0.05", "Avg") in t.best_cells()


def test_gap_table_pairs_distill_with_control(results, boot):
    t = gap_table(results, boot)
    assert list(t.values.columns) == ["distill λ=0.05 − control λ=0.05", "distill λ=0.5 − control λ=0.05"]
    iv = boot.interval("distill λ=0.5", "control λ=0.05")
    assert t.high.loc["pos", "distill λ=0.5 − control λ=0.05"] == iv.at["pos", "high"]
    assert t.best is None


def test_best_lambda_table_interval_follows_the_best_label(results, boot):
    t = best_lambda_table(results, boot)
    assert t.values.at["Avg", "best λ"] == 0.05
    iv = boot.interval("distill λ=0.05", "sft")
    assert t.low.loc["Avg", "Δ best vs sft"] == iv.at["Avg", "low"]
    assert np.isnan(t.std.loc["Avg", "best λ"])
    assert "| **Avg** | **" in render(t, "md") and "| 0.05 |" in render(t, "md")


def test_lambda_and_ce_tables(results):
    lam = learned_lambda_table(results)
    assert lam.values.at["distill λ=0.5", "qa"] == pytest.approx(0.55)
    assert lam.std.loc["distill λ=0.5", "qa"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert "| Condition | NLI | QA | NER | POS |" in render(lam, "md")
    ce = ce_table(results)
    assert "| distill λ=0.5 | NER | 2.200 ± 0.000 |" in render(ce, "md")


def test_study_tables_gives_reasons_for_what_it_cannot_make(results, boot):
    out = study_tables(results, boot)
    assert list(out) == ["delta", "lang_nli", "lang_qa", "lang_ner", "lang_pos", "gap", "best_lambda",
                         "learned_lambda", "ce"]
    assert all(isinstance(t, Table) for t in out.values())
    no_ctrl = study_tables(results[results["condition"] != "control"])
    assert no_ctrl["gap"] == "a Dist − Ctrl gap needs both distill and control trials"
    sft_only = study_tables(results[results["condition"] == "sft"])
    assert isinstance(sft_only["delta"], Table) and isinstance(sft_only["best_lambda"], str)
    assert isinstance(sft_only["ce"], str) and isinstance(sft_only["learned_lambda"], str)


def test_sweep_delta_table_carries_the_bootstrap_interval_of_each_delta(experiment, results, predictions):
    from analysis.study import sweep_delta_table

    t = sweep_delta_table(experiment, n_boot=200, seed=3)
    iv = bootstrap(predictions, n_boot=200, seed=3).interval("distill λ=0.5", "sft")
    pd.testing.assert_frame_equal(t.values, delta_table(results).values)
    assert t.low.loc["Avg", "Δ distill λ=0.5"] == iv.at["Avg", "low"]
    assert t.high.loc["ner", "Δ distill λ=0.5"] == iv.at["ner", "high"]
    assert "[" in render(t, "md").splitlines()[-3]  # the Avg row shows its intervals


def test_sweep_delta_table_without_predictions_says_why(experiment):
    import shutil

    from analysis.study import sweep_delta_table

    shutil.rmtree(experiment / "predictions")
    t = sweep_delta_table(experiment, n_boot=50)
    assert t.low is None and "No bootstrap interval" in t.note and "predictions" in t.note

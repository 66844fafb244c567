"""Paired bootstrap (fast, count-weighted) against a direct, slow recomputation with metric();
per-example statistics against metric() and seqeval; spread over seeds against a direct std."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from seqeval.metrics import f1_score as seqeval_f1

from analysis import AnalysisError, bootstrap
from analysis import tables as tb
from analysis.stats import example_stats, ratio, resample_counts, resample_indices, seed_std
from trainables.tasks.metrics import metric
from trainables.tasks.schema import HEADLINE_METRIC, TASKS


def _pairs(preds: pd.DataFrame, task: str, lang: str, trial: str):
    g = preds[(preds["trial_id"] == trial) & (preds["task"] == task) & (preds["lang"] == lang)].sort_values("example_id")
    return [json.loads(p) for p in g["prediction"]], [json.loads(r) for r in g["reference"]]


@pytest.mark.parametrize("task,lang,name", [("nli", "en", "acc"), ("qa", "de", "f1"), ("qa", "en", "em"),
                                            ("ner", "hi", "f1"), ("ner", "en", "precision"),
                                            ("ner", "en", "recall"), ("pos", "hi", "acc")])
def test_example_stats_sum_to_metric_on_the_full_set(predictions, task, lang, name):
    for trial in predictions["trial_id"].unique():
        p, r = _pairs(predictions, task, lang, trial)
        num, den = example_stats(task, lang, p, r, name)
        assert ratio(num.sum(), den.sum()) == pytest.approx(metric(task, lang, p, r)[name], abs=1e-9)


def test_ner_counts_equal_seqeval_f1_directly(predictions):
    p, r = _pairs(predictions, "ner", "en", "t3_1")  # has truncated and missing predictions
    assert any(x is None or len(x) < len(g) for x, g in zip(p, r))
    num, den = example_stats("ner", "en", p, r)
    fitted = [(list(x or [])[: len(g)] + ["O"] * (len(g) - len(x or []))) for x, g in zip(p, r)]
    assert 100 * num.sum() / den.sum() == pytest.approx(100 * seqeval_f1(r, fitted), abs=1e-9)
    # A resample is a sum: any subset's counts give seqeval's F1 on that subset.
    keep = [0, 3, 3, 7, 11, 11, 11]
    sub = 100 * seqeval_f1([r[i] for i in keep], [fitted[i] for i in keep])
    assert 100 * num[keep].sum() / den[keep].sum() == pytest.approx(sub, abs=1e-9)


def test_unsupported_metrics_are_refused():
    with pytest.raises(AnalysisError, match="no bootstrap for pos f1"):
        example_stats("pos", "en", [["NOUN"]], [["NOUN"]], "f1")


def test_resample_counts_match_the_indices():
    idx = resample_indices(7, 5, 3, "ner", "hi")
    counts = resample_counts(7, 5, 3, "ner", "hi")
    assert idx.shape == (5, 7) and counts.shape == (5, 7)
    assert (counts.sum(axis=1) == 7).all()
    for b in range(5):
        assert counts[b].tolist() == np.bincount(idx[b], minlength=7).tolist()
    assert not np.array_equal(idx, resample_indices(7, 5, 3, "ner", "en"))  # per (task, lang)


def _direct(preds: pd.DataFrame, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Slow reference: metric() on every resample, seeds averaged, languages → task → Avg."""
    out: dict[tuple[str, str, str], np.ndarray] = {}
    for (task, lang), g in preds.groupby(["task", "lang"]):
        n = g[g["trial_id"] == g["trial_id"].iloc[0]].shape[0]
        idx = resample_indices(n, n_boot, seed, task, lang)
        for label, lg in g.groupby("label"):
            per_trial = []
            for trial in lg["trial_id"].unique():
                p, r = _pairs(preds, task, lang, trial)
                per_trial.append([metric(task, lang, [p[i] for i in ids], [r[i] for i in ids])[HEADLINE_METRIC[task]]
                                  for ids in idx])
            out[(label, task, lang)] = np.mean(per_trial, axis=0)
    task_scores: dict[str, dict[str, np.ndarray]] = {}
    for (label, task, _), arr in out.items():
        task_scores.setdefault(label, {}).setdefault(task, []).append(arr)
    result = {}
    for label, per_task in task_scores.items():
        means = {t: np.mean(v, axis=0) for t, v in per_task.items()}
        result[label] = {**means, "Avg": np.mean(list(means.values()), axis=0)}
    return result


def test_bootstrap_matches_a_direct_slow_computation(predictions):
    n_boot, seed = 30, 11
    boot = bootstrap(predictions, n_boot=n_boot, seed=seed)
    direct = _direct(predictions, n_boot, seed)
    ts = boot.task_scores()
    for label, per_task in direct.items():
        for task, arr in per_task.items():
            np.testing.assert_allclose(ts.loc[(label, task)].to_numpy(), arr, atol=1e-9)
    for cond in ("distill λ=0.05", "control λ=0.05"):
        iv = boot.interval(cond, "sft")
        assert list(iv.index) == ["nli", "qa", "ner", "pos", "Avg"]
        for task in iv.index:
            lo, hi = np.percentile(direct[cond][task] - direct["sft"][task], [2.5, 97.5])
            assert iv.at[task, "low"] == pytest.approx(lo) and iv.at[task, "high"] == pytest.approx(hi)
    iv90 = boot.interval("distill λ=0.05", "sft", level=0.9)
    lo, hi = np.percentile(direct["distill λ=0.05"]["Avg"] - direct["sft"]["Avg"], [5, 95])
    assert (iv90.at["Avg", "low"], iv90.at["Avg", "high"]) == pytest.approx((lo, hi))


def test_bootstrap_is_paired_seeded_and_reproducible(predictions):
    twin = predictions[predictions["label"] == "sft"].assign(label="sft twin", trial_id=lambda d: d["trial_id"] + "b")
    boot = bootstrap(pd.concat([predictions, twin]), n_boot=60, seed=5)
    same = boot.interval("sft twin", "sft")
    assert (same["low"] == 0).all() and (same["high"] == 0).all()  # the same resample for both sides
    a = bootstrap(predictions, n_boot=60, seed=5).interval("distill λ=0.05", "sft")
    b = bootstrap(predictions, n_boot=60, seed=5).interval("distill λ=0.05", "sft")
    c = bootstrap(predictions, n_boot=60, seed=6).interval("distill λ=0.05", "sft")
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    # The synthetic distill λ=0.05 is much better than SFT: its Avg interval excludes 0.
    assert a.at["Avg", "low"] > 0
    # The full set (counts of one) reproduces the reported metric through the same sums.
    full = predictions[(predictions["trial_id"] == "t2_1") & (predictions["task"] == "qa") & (predictions["lang"] == "en")]
    p, r = _pairs(full, "qa", "en", "t2_1")
    assert ratio(*(s.sum() for s in example_stats("qa", "en", p, r))) == pytest.approx(metric("qa", "en", p, r)["f1"])


def test_bootstrap_input_errors(predictions):
    broken = predictions[~((predictions["trial_id"] == "t1_1") & (predictions["example_id"] == "ner-hi-003"))]
    with pytest.raises(AnalysisError, match="different ner/hi examples"):
        bootstrap(broken, n_boot=5)
    with pytest.raises(AnalysisError, match="several splits"):
        bootstrap(pd.concat([predictions, predictions.assign(split="dev")]), n_boot=5)
    with pytest.raises(AnalysisError, match="n_boot"):
        bootstrap(predictions, n_boot=0)
    with pytest.raises(AnalysisError, match="lack column"):
        bootstrap(predictions.drop(columns="reference"))


def test_seed_std_is_the_std_of_per_seed_tables(results):
    by_seed = tb.headline_scores(results, by_seed=True)
    std = seed_std(by_seed, tb.delta_vs_sft, keep=["sft"])
    per_seed = [tb.delta_vs_sft(by_seed[by_seed["seed"] == s].drop(columns="seed")) for s in (1, 2)]
    for cell in [("nli", "sft"), ("Avg", "distill λ=0.5"), ("ner", "Δ distill λ=0.05")]:
        assert std.loc[cell] == pytest.approx(np.std([t.loc[cell] for t in per_seed], ddof=1))
    assert seed_std(by_seed[by_seed["seed"] == 1], tb.delta_vs_sft) is None


def test_seed_std_stands_in_a_missing_baseline_with_its_mean(results):
    by_seed = tb.headline_scores(results, by_seed=True)
    lone = by_seed[~((by_seed["condition"] == "sft") & (by_seed["seed"] == 2))]
    std = seed_std(lone, tb.delta_vs_sft, keep=["sft"])
    assert np.isnan(std.loc["Avg", "sft"])  # one seed of its own: no spread
    d1 = tb.delta_vs_sft(lone[lone["seed"] == 1].drop(columns="seed"))
    s2 = lone[lone["seed"] == 2].drop(columns="seed")
    d2 = tb.delta_vs_sft(pd.concat([s2, lone[(lone["condition"] == "sft")].drop(columns="seed")]))
    cell = ("Avg", "Δ distill λ=0.05")
    assert std.loc[cell] == pytest.approx(np.std([d1.loc[cell], d2.loc[cell]], ddof=1))
    assert set(TASKS) >= set(std.index) - {"Avg"}

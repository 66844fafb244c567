"""analysis.load / load_predictions: experiment dirs and results files into one tidy frame, clear errors."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from analysis import AnalysisError, load, load_predictions
from tests.analysis import synth
from analysis.collect import COLUMNS


def test_load_a_directory_adds_the_experiment_column(experiment):
    df = load(experiment)
    raw = pd.read_parquet(experiment / "results.parquet")
    assert list(df.columns) == ["experiment", *COLUMNS]
    assert (df["experiment"] == "synth").all()
    pd.testing.assert_frame_equal(df.drop(columns="experiment"), raw)


def test_load_a_results_file_and_several_experiments(tmp_path):
    a = synth.write_experiment(tmp_path, "a")
    b = synth.write_experiment(tmp_path, "b", seeds=(3,))
    df = load([a / "results.parquet", str(b)])
    assert set(df["experiment"]) == {"a", "b"}
    assert len(df) == len(pd.read_parquet(a / "results.parquet")) + len(pd.read_parquet(b / "results.parquet"))
    # Same labels are pooled by default; label_by_experiment keeps them apart.
    assert set(load([a, b], label_by_experiment=True)["label"]) >= {"a/sft", "b/sft"}


def test_same_folder_names_are_told_apart_by_path(tmp_path):
    a = synth.write_experiment(tmp_path / "x", "smoke")
    b = synth.write_experiment(tmp_path / "y", "smoke")
    assert set(load([a, b])["experiment"]) == {str(a), str(b)}


def _tune_trial(exp, name, label, reports):
    d = exp / name
    d.mkdir(parents=True)
    variant = {"label": label, "condition": label.split()[0],
               "policy": {"name": "fixed", "params": {"lam": 0.05}}, "teacher_mode": "fewshot"}
    (d / "params.json").write_text(json.dumps({"trial": {"variant": variant, "train": {"seed": 7},
                                                         "model": {"name": "tiny", "finetune": "full"}}}))
    (d / "result.json").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    return d


def test_a_tune_experiment_without_results_file_is_collected(tmp_path):
    exp = tmp_path / "live"
    _tune_trial(exp, "trial_a", "distill λ=0.05",
                [{"trial_id": "a", "step": 2, "eval_index": 1, "final": False, "nli/en/acc": 50.0, "train/ce": 1.5},
                 {"trial_id": "a", "step": 4, "eval_index": 2, "final": True, "test/nli/en/acc": 75.0}])
    df = load(exp)
    test = df[(df["split"] == "test") & (df["metric"] == "acc")]
    assert test["value"].tolist() == [75.0] and test["final"].tolist() == [True]
    assert df.loc[df["metric"] == "ce", "value"].tolist() == [1.5]
    assert set(df["label"]) == {"distill λ=0.05"} and set(df["seed"]) == {7}
    assert not (exp / "results.parquet").exists()  # read-only


def test_a_stale_results_file_is_collected_again(tmp_path):
    exp = tmp_path / "live"
    trial = _tune_trial(exp, "trial_a", "sft", [{"trial_id": "a", "step": 2, "eval_index": 1, "nli/en/acc": 50.0}])
    from analysis.collect import write_results

    write_results(exp)
    old = time.time() - 60
    os.utime(exp / "results.parquet", (old, old))
    with open(trial / "result.json", "a") as f:
        f.write(json.dumps({"trial_id": "a", "step": 4, "eval_index": 2, "nli/en/acc": 80.0}) + "\n")
    assert sorted(load(exp)["value"]) == [50.0, 80.0]


def test_bad_inputs_raise_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    empty = tmp_path / "empty"
    empty.mkdir()
    pd.DataFrame(columns=COLUMNS).to_parquet(empty / "results.parquet")
    other = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(other)
    cases = {tmp_path / "missing": "does not exist", tmp_path / "plain": "not a lamtune experiment directory",
             tmp_path / "notes.txt": "neither an experiment directory", empty: "no results yet",
             other: "not a lamtune results table"}
    for path, message in cases.items():
        with pytest.raises(AnalysisError, match=message) as err:
            load(path)
        assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    with pytest.raises(AnalysisError, match="no experiment given"):
        load([])


def test_load_predictions_joins_trial_columns(experiment):
    preds = load_predictions(experiment)
    assert {"experiment", "trial_id", "label", "condition", "seed", "lam", "teacher_mode", "split", "task", "lang",
            "example_id", "prediction", "reference", "parse_failed"} <= set(preds.columns)
    assert set(preds["split"]) == {"test"}
    per_trial = preds.groupby("trial_id")[["label", "seed"]].first()
    assert per_trial.loc["t2_1"].tolist() == ["distill λ=0.05", 1]
    assert per_trial.loc["t0_2"].tolist() == ["sft", 2]
    assert len(preds) == 8 * len(synth.PAIRS) * 24


def test_load_predictions_errors(tmp_path):
    exp = synth.write_experiment(tmp_path, with_predictions=False)
    with pytest.raises(AnalysisError, match="no per-example predictions"):
        load_predictions(exp)
    with pytest.raises(AnalysisError, match="split must be"):
        load_predictions(exp, split="train")


def test_trial_ids_shared_by_two_experiments_are_kept_apart(tmp_path):
    a = synth.write_experiment(tmp_path, "a")
    b = synth.write_experiment(tmp_path, "b")  # same synthetic trial ids
    df = load([a, b])
    assert df.groupby("trial_id")["experiment"].nunique().eq(1).all()
    assert "b:t0_1" in set(df["trial_id"]) and "t0_1" in set(df["trial_id"])
    preds = load_predictions([a, b])
    assert preds.groupby("trial_id")["experiment"].nunique().eq(1).all()
    assert preds["trial_id"].nunique() == 16

"""End to end: a real Ray Tune sweep (TorchTrainer trials, ASHA) at tiny sizes, read back from disk."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest

from trainables.tasks.schema import HEADLINE_METRIC, LANGS, TASKS
from tuner.loading import load_spec
from tuner.sweep import run_sweep

TINY = [
    "train.steps=4", "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
    "data.max_train_per_task=12", "data.synthetic_sizes={train: 12, dev: 4, test: 4}",
    "eval.dev_per_pair=2", "eval.test_per_pair=3",
    "eval.max_new_tokens={nli: 2, pa: 2, qa: 4, ner: 6, pos: 6}",
    "teacher.top_k=64",
    # The smoke preset's machinery (ASHA, SFT + control λ=0.05 + distill), without its base/fewshot columns.
    "variants=[]", "control_lambda=0.05", "search.scheduler=asha",
]


@pytest.mark.e2e
def test_smoke_sweep_end_to_end(ray_session, tmp_path):
    spec = load_spec("smoke", TINY)
    out = io.StringIO()
    outcome = run_sweep(spec, tmp_path, out=out)
    assert outcome.errors == {}
    # Nothing stays reserved after the sweep: a second sweep in this Ray session gets every CPU.
    deadline = time.time() + 20
    while ray_session.available_resources().get("CPU", 0) < ray_session.cluster_resources()["CPU"]:
        assert time.time() < deadline, ray_session.available_resources()
        time.sleep(0.5)
    assert outcome.results_path == tmp_path / "smoke" / "results.parquet"

    df = pd.read_parquet(outcome.results_path)
    assert set(df["label"]) == {"sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5"}
    assert df.groupby("label")["trial_id"].nunique().eq(1).all()
    # Every trial's final test eval covers every task × language with its headline metric, in 0–100.
    final = df[(df["split"] == "test") & df["final"] & df["lang"].isin(LANGS)]
    head = final[final["metric"] == final["task"].map(HEADLINE_METRIC)]
    assert head.groupby("label").size().eq(len(TASKS) * len(LANGS)).all()
    assert head["value"].between(0, 100).all()
    assert set(final["metric"]) >= {"acc", "f1", "em", "parse_fail", "precision", "recall"}
    # The baselines are protected from ASHA: they report at both evaluations.
    dev = df[(df["split"] == "dev") & (df["task"] == "all")]
    for label in ("sft", "control λ=0.05"):
        assert sorted(dev[dev["label"] == label]["eval_index"].unique()) == [1, 2]
    # Condition and λ columns, and training losses.
    lam = df.drop_duplicates("label").set_index("label")["lam"]
    assert lam["sft"] == 0.0 and lam["distill λ=0.5"] == 0.5 and lam["control λ=0.05"] == 0.05
    train = df[(df["split"] == "train") & (df["metric"] == "kd")]
    assert (train[train["label"] == "sft"]["value"] == 0).all()
    assert (train[train["label"] == "distill λ=0.5"]["value"] > 0).all()
    teacher_modes = df.drop_duplicates("label").set_index("label")["teacher_mode"]
    assert teacher_modes["distill λ=0.05"] == "fewshot" and teacher_modes["control λ=0.05"] == "zeroshot"

    # Which trials ASHA stops depends on the order their reports arrive; the baselines always finish.
    finished = set(df[(df["split"] == "test") & df["final"]]["label"])
    assert {"sft", "control λ=0.05"} <= finished
    # Per-example predictions for every trial that reached its test evaluation; TensorBoard logs.
    for trial_id in df[df["label"].isin(finished)]["trial_id"].unique():
        preds = pd.read_parquet(tmp_path / "smoke" / "predictions" / trial_id / "test.parquet")
        assert len(preds) == len(TASKS) * len(LANGS) * 3
    assert list((tmp_path / "smoke").glob("trial_*/events.out.tfevents*"))
    # The table: a Δ column per finished non-SFT trial; the stopped ones named under it.
    assert "| **Avg** |" in outcome.table_markdown
    for label in finished - {"sft"}:
        assert f"Δ {label}" in outcome.table_markdown
    for label in set(df["label"]) - finished:
        assert f"Δ {label}" not in outcome.table_markdown
        assert label in outcome.table_markdown.split("Stopped early by the scheduler")[1]
    assert out.getvalue().count(" done") == 4

    # Running again with --resume keeps the finished trials and does not run them again.
    again = run_sweep(spec, tmp_path, resume=True, out=io.StringIO())
    df2 = pd.read_parquet(again.results_path)
    assert set(df2["trial_id"]) == set(df["trial_id"])

"""Faults injected into a real sweep (the CLI, its own Ray, TorchTrainer trials), asserted on results:
a training worker killed with SIGKILL mid-run resumes from its checkpoint and ends exactly where an
uninterrupted run ends; a trial whose Tune driver is killed before its TorchTrainer is retried by
Tune and finishes; a trial whose loss explodes fails alone, once, with its reason; the rest finish
and the Δ table prints without it, saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import failed_trials
from tests.tuner.reference_run import assert_same_final, reports

REPO = Path(__file__).resolve().parents[2]
KILLED = "distill λ=0.5"
DRIVER_KILLED = "control λ=0.05"
SETS = [
    "train.steps=4", "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
    "data.tasks=[nli,pos]", "data.eval_langs=[en,de]", "data.max_train_per_task=8",
    "data.synthetic_sizes={train: 8, dev: 2, test: 2}", "eval.dev_per_pair=2", "eval.test_per_pair=2",
    "eval.max_new_tokens={nli: 2, pos: 4}", "teacher.top_k=16",
    "search.scheduler=none", "distill_lambdas=[0.5]", "control_lambda=0.05",
    # A cell whose learning rate explodes (no clipping): its loss turns non-finite within a few steps.
    "variants=[{condition: distill, policy: {name: fixed, params: {lam: 0.05}}, lr: 100000.0, label: exploding}]",
    "train.grad_clip=0",
    "resources.max_concurrent_trials=2",
]


@pytest.mark.e2e
def test_killed_worker_resumes_from_its_checkpoint_and_exploding_trial_fails_alone(tmp_path):
    storage = tmp_path / "sweeps"
    env = {**os.environ, "LAMTUNE_INJECT_FAULT": f"kill@3:{KILLED},kill@driver:{DRIVER_KILLED}",
           "RAY_memory_monitor_refresh_ms": "0"}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "tuner", "sweep", "smoke", *[a for s in SETS for a in ("--set", s)],
            "--storage", str(storage), "--name", "faults"]
    r = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    exp = storage / "faults"
    # One trial failed, so the sweep exits 1; its reason is one line naming the step.
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 trial(s) failed" in r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.strip().startswith("exploding:"))
    assert "non-finite loss at step " in line and line.endswith("(not retried: deterministic)"), line
    failed = failed_trials(exp)
    assert list(failed["label"]) == ["exploding"] and failed["retries"].iloc[0] == []
    assert "non-finite loss at step " in failed["reason"].iloc[0]
    # The Δ table printed without it, and says so.
    assert "Δ distill λ=0.5" in r.stdout and "Δ exploding" not in r.stdout
    assert "Failed (not in the table): exploding (" in r.stdout and "non-finite loss at step" in r.stdout

    # The killed trial was retried once, for its lost worker, and continued after its step-2 checkpoint.
    df = pd.read_parquet(exp / "results.parquet")
    assert set(df[df["final"]]["label"]) == {"sft", "control λ=0.05", KILLED}
    trial_id = df[df["label"] == KILLED]["trial_id"].iloc[0]
    assert (exp / "faults" / f"{trial_id}.killed").is_file()  # the injected SIGKILL happened
    retries = json.loads((exp / f"trial_{trial_id}" / "retries.json").read_text())
    assert len(retries) == 1 and retries[0]["attempt"] == 1, retries
    # None repeated: step 2 came back from the checkpoint, in the trial's log and in Tune's rows.
    assert [x["step"] for x in reports(exp, trial_id)] == [2, 4]
    tune_rows = (exp / f"trial_{trial_id}" / "result.json").read_text().splitlines()
    assert [json.loads(x)["step"] for x in tune_rows] == [2, 4]
    assert "retried distill λ=0.5 (attempt 1: a worker process died (killed or crashed)" in r.stdout
    # Only the newest checkpoint is kept (train.checkpoints_kept=1), the retry's restored one included.
    assert len([d for d in (exp / "train_runs" / f"train-{trial_id}").glob("checkpoint_*") if d.is_dir()]) == 1

    # The trial whose Tune driver died before its TorchTrainer: Tune ran it again, once, and said so.
    driver_id = df[df["label"] == DRIVER_KILLED]["trial_id"].iloc[0]
    assert (exp / "faults" / f"{driver_id}.driver-killed").is_file()
    driver_retries = json.loads((exp / f"trial_{driver_id}" / "retries.json").read_text())
    assert [x["attempt"] for x in driver_retries] == [1], driver_retries
    assert f"{DRIVER_KILLED:<20} retrying (attempt 1: " in r.stdout
    assert f"retried {DRIVER_KILLED} (attempt 1: " in r.stdout
    assert [x["step"] for x in reports(exp, driver_id)] == [2, 4]

    # Its final metrics equal an uninterrupted run of the same trial config, in this process.
    assert_same_final(exp, trial_id, tmp_path / "reference")

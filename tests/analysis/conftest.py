"""Analysis fixtures: synthetic experiments (fast tests) and one real tiny sweep shared by the e2e tests."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from tests.analysis import synth

#: A tiny sweep that finishes every trial (no ASHA) with two seeds, so every table has data.
E2E_OVERRIDES = [
    "train.steps=4", "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
    "data.max_train_per_task=12", "data.synthetic_sizes={train: 12, dev: 4, test: 4}",
    "eval.dev_per_pair=2", "eval.test_per_pair=3",
    "eval.max_new_tokens={nli: 2, pa: 2, qa: 4, ner: 6, pos: 6}",
    "teacher.top_k=64", "search.scheduler=none", "search.seeds=[1, 2]",
    "variants=[]", "control_lambda=0.05",  # the four trained columns only (no base/fewshot): CI time
]


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A synthetic experiment directory: 4 conditions × 2 seeds, results.parquet + predictions."""
    return synth.write_experiment(tmp_path)


@pytest.fixture
def results(experiment: Path) -> pd.DataFrame:
    """The synthetic experiment's tidy results, as analysis.load returns them."""
    from analysis import load

    return load(experiment)


@pytest.fixture
def predictions(experiment: Path) -> pd.DataFrame:
    """The synthetic experiment's test predictions, as analysis.load_predictions returns them."""
    from analysis import load_predictions

    return load_predictions(experiment)


@pytest.fixture(scope="session")
def sweep_dir(ray_session, tmp_path_factory) -> Path:
    """A real Ray Tune sweep (smoke preset at tiny sizes), run once for every e2e analysis test."""
    from tuner.loading import load_spec
    from tuner.sweep import run_sweep

    storage = tmp_path_factory.mktemp("analysis-sweep")
    outcome = run_sweep(load_spec("smoke", E2E_OVERRIDES), storage, out=io.StringIO())
    assert outcome.errors == {}
    return outcome.experiment_dir

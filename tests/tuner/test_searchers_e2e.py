"""Every searcher the sweep file accepts runs through Tune with ASHA (grid is covered by the smoke sweep).

Kept small for 2-CPU CI: one task, one language, 4 steps, 2 trials per sweep, the module's sweeps
sharing one Ray session and one teacher cache."""

from __future__ import annotations

import io
import typing

import pandas as pd
import pytest

from tuner.loading import load_spec
from tuner.spec import SearchConfig
from tuner.sweep import run_sweep

SEARCHERS = typing.get_args(SearchConfig.model_fields["searcher"].annotation)
TINY = [
    "data.tasks=[nli]", "data.eval_langs=[en]", "data.max_train_per_task=8",
    "data.synthetic_sizes={train: 8, dev: 2, test: 2}",
    "train.steps=4", "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
    "eval.dev_per_pair=2", "eval.test_per_pair=2", "eval.max_new_tokens={nli: 2}",
    "teacher.top_k=16", "add_baselines=false", "variants=[]", "distill_lambdas=[0.1]",
    "search.scheduler=asha", "search.num_samples=1", "search.families=[fixed]", "search.seed=3",
    "resources.max_concurrent_trials=2",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("teacher_cache")


@pytest.mark.e2e
@pytest.mark.parametrize("searcher", [s for s in SEARCHERS if s != "grid"])
def test_every_searcher_runs_a_sweep_with_asha(ray_session, tmp_path, cache_dir, searcher):
    spec = load_spec("smoke", [*TINY, f"search.searcher={searcher}", f"teacher.cache_dir={cache_dir}"],
                     name=f"s-{searcher}")
    out = io.StringIO()
    outcome = run_sweep(spec, tmp_path, out=out)
    assert outcome.errors == {}, outcome.errors
    df = pd.read_parquet(outcome.results_path)
    labels = set(df["label"])
    # The fixed variant first, then one sampled distill trial whose λ came from the searcher.
    assert "distill λ=0.1" in labels and len(labels) == 2, labels
    lam = df.drop_duplicates("trial_id").set_index("label")["lam"]
    sampled = lam.drop("distill λ=0.1")
    assert len(sampled) == 1 and 0 < float(sampled.iloc[0]) and float(sampled.iloc[0]) != 0.1
    assert f"searcher {searcher}: 1 fixed trials, then 1 sampled" in out.getvalue()
    assert out.getvalue().count(" done") == 2
    # Every report carries the trial worker's peak resident memory.
    progress = [pd.read_csv(f) for f in (tmp_path / f"s-{searcher}").glob("trial_*/progress.csv")]
    assert len(progress) == 2
    assert all((p["mem/peak_rss_gb"] > 0).all() and (p["mem/peak_rss_gb"] < 8).all() for p in progress)


def test_sampling_searchers_pickle_and_repeat_by_seed(tmp_path):
    """Tune pickles the searcher at every experiment checkpoint; the seed fixes the draws."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces.spaces import define_by_run, tune_space
    from tuner.searchers import BaselinesFirst, SeededRandom

    fixed = [{"trial": {"label": "fixed"}}]
    draws = []
    for _ in range(2):
        rand = BaselinesFirst(SeededRandom({"trial": {}, **tune_space("fixed")}, seed=5, metric="avg", mode="max"), fixed)
        opt = BaselinesFirst(OptunaSearch(space=define_by_run(["fixed"], {}, {"trial": {}}), metric="avg", mode="max",
                                          sampler=optuna.samplers.TPESampler(seed=5)), fixed)
        for s in (rand, opt):
            assert s.suggest("a") == fixed[0]
            draws.append(s.suggest("b"))
            s.save(str(tmp_path / "state.pkl"))  # raised for both before the fix
    assert draws[0] == draws[2] and draws[0]["sampled"]["policy"] == "fixed"
    assert draws[1] == draws[3] and draws[1]["sampled"]["policy"] == "fixed"

"""Every shipped preset validates, builds its policies, and encodes the study's protocol."""

from __future__ import annotations

import pytest

from search_spaces.presets import preset_names
from trainables.policies import make_policy
from tuner.loading import load_spec

STUDY = {"seed-multitask", "seed-lambda-ner", "seed-lambda-pos", "seed-meta", "seed-warmup",
         "next-task-prior", "next-entropy", "next-meta-warmstart", "optuna-policies", "smoke"}


def test_every_experiment_of_the_study_has_a_preset():
    assert STUDY <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_validates_and_builds_every_policy(name):
    spec = load_spec(name)
    assert spec.name == name
    for v in spec.expanded_variants():
        if v.uses_teacher:
            make_policy(v.policy.name, v.policy.params, spec.data.tasks)
    # A real model is one override away, with nothing else to change.
    real = load_spec(name, ["model.name=meta-llama/Llama-3.2-3B-Instruct", "resources.use_gpu=true"])
    assert real.model.name == "meta-llama/Llama-3.2-3B-Instruct"


def test_seed_multitask_matches_the_study_table_columns():
    spec = load_spec("seed-multitask")
    labels = {v.label for v in spec.expanded_variants()}
    assert labels == {"base", "fewshot", "sft", "distill λ=0.5", "distill λ=0.05", "control λ=0.5", "distill meta"}
    assert spec.train.steps == 1000 and spec.train.batch_size == 8 and spec.train.lr == 2e-4
    assert spec.model.finetune == "lora" and spec.model.lora_r == 16 and spec.model.lora_alpha == 32
    assert spec.data.max_train_per_task == 5000 and spec.teacher.top_k == 256
    assert spec.data.shots == {"nli": 5, "pa": 5, "qa": 3, "ner": 5, "pos": 5}
    assert spec.eval.test_per_pair == 500


@pytest.mark.parametrize("task", ["ner", "pos"])
def test_seed_lambda_sweeps(task):
    spec = load_spec(f"seed-lambda-{task}")
    assert spec.data.tasks == [task] and spec.train.batch_size == 8 and spec.train.steps == 200
    lams = sorted(v.policy.params["lam"] for v in spec.expanded_variants() if v.condition == "distill")
    assert lams == [0.05, 0.1, 0.2, 0.5]
    controls = sorted(v.policy.params["lam"] for v in spec.expanded_variants() if v.condition == "control")
    assert controls == [0.05, 0.5]


def test_next_runs_use_the_recommended_policies():
    prior = {"nli": 0.5, "pa": 0.3, "qa": 0.2, "ner": 0.05, "pos": 0.05}
    tp = load_spec("next-task-prior").expanded_variants()
    assert any(v.policy.name == "task_prior" and v.policy.params["lams"] == prior for v in tp)
    ent = load_spec("next-entropy").expanded_variants()
    assert any(v.policy.name == "entropy" and v.policy.params["lam_max"] == 0.5 for v in ent)
    meta = load_spec("next-meta-warmstart").expanded_variants()
    assert any(v.policy.name == "meta" and v.policy.params.get("warm_start") == prior for v in meta)
    warm = load_spec("seed-warmup").expanded_variants()
    assert any(v.policy.name == "warmup" and v.policy.params == {"steps": 100, "lam": 0.05} for v in warm)
    opt = load_spec("optuna-policies")
    assert opt.search.searcher == "optuna" and opt.search.scheduler == "asha" and len(opt.search.families) >= 5

"""Trials start longest first: the slowest trial must not be the last one to start."""

from __future__ import annotations

import pytest

from tuner.launch_order import (
    EVAL_EXAMPLE_S,
    FEWSHOT_EVAL_FACTOR,
    SPLIT_GRADIENT_FACTOR,
    STEP_S,
    launch_order,
    longest_first,
    trial_cost,
)
from tuner.loading import load_spec


def trials(overrides: list[str] = ()) -> list:
    spec = load_spec("seed-multitask", list(overrides))
    return spec.trial_configs("/tmp/x", {"fewshot": "/tmp/f", "zeroshot": "/tmp/z"})


def test_the_study_starts_meta_first_and_the_evaluation_only_trials_last():
    order = [t.variant.label for t in longest_first(trials())]
    assert order[0] == "distill meta"
    assert set(order[1:5]) == {"sft", "control λ=0.5", "distill λ=0.5", "distill λ=0.05"}
    assert order[5:] == ["fewshot", "base"]


def test_the_cost_counts_steps_policy_and_every_evaluation():
    by_label = {t.variant.label: t for t in trials(["train.steps=200", "train.eval_every=100",
                                                     "eval.dev_per_pair=20", "eval.test_per_pair=100"])}
    pairs = 5 * 6  # the synthetic source has every task in all six evaluation languages
    # 200 steps, 2 dev evaluations of 20 per pair and one test evaluation of 100 per pair.
    sft = 200 * STEP_S + pairs * (2 * 20 + 100) * EVAL_EXAMPLE_S
    assert trial_cost(by_label["sft"]) == pytest.approx(sft)
    meta = 200 * STEP_S * SPLIT_GRADIENT_FACTOR + pairs * (2 * 20 + 100) * EVAL_EXAMPLE_S
    assert trial_cost(by_label["distill meta"]) == pytest.approx(meta)
    # Evaluation only: one dev and one test evaluation; few-shot prompts cost more to decode.
    assert trial_cost(by_label["base"]) == pytest.approx(pairs * 120 * EVAL_EXAMPLE_S)
    assert trial_cost(by_label["fewshot"]) == pytest.approx(pairs * 120 * EVAL_EXAMPLE_S * FEWSHOT_EVAL_FACTOR)


def test_equal_costs_keep_the_sweeps_order():
    ts = trials()
    twins = [ts[0], ts[0].model_copy(update={"experiment_dir": "/tmp/y"})]
    assert longest_first(twins) == twins


def test_while_caches_build_the_trials_that_need_none_start_first():
    """Study run 8 (one H100, two at a time): meta-λ held a slot 110 s waiting for the caches while
    base and fewshot, which need none, waited to start."""
    ts = trials()
    order = [t.variant.label for t in launch_order(ts, {"fewshot", "zeroshot"})]
    assert order[:3] == ["sft", "fewshot", "base"]  # no cache, longest first
    assert order[3] == "distill meta" and set(order[4:]) == {"control λ=0.5", "distill λ=0.5", "distill λ=0.05"}
    # Only the few-shot cache building: control (zero-shot teacher, cache found) may start early too.
    partly = [t.variant.label for t in launch_order(ts, {"fewshot"})]
    assert partly[:4] == ["sft", "control λ=0.5", "fewshot", "base"] and partly[4] == "distill meta"
    # Nothing building: plain longest first.
    assert launch_order(ts) == longest_first(ts) == launch_order(ts, set())

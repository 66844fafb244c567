"""The order a sweep's trials start in: those that need no teacher cache the sweep is still
building, then the rest; each group longest first.

Tune starts trials in the order it is given them, as many at a time as fit. With the study's
order (sft, base, fewshot, control, then the distill trials) the three evaluation-only or short
trials went first and the slowest one (meta-λ, whose probe steps back-propagate every task's KD
apart) started last, so the sweep ended with it running alone (H200 study runs 5 and 6). Starting
the longest trials first lets the short ones fill the slots that free up near the end.

But a trial that needs a cache holds its slot idle until the cache is built: on one H100 (study
run 8, two trials at a time) meta-λ started first and waited 110 s for the caches while base and
fewshot, which need none, could not start, and the sweep ran out of time with both unstarted. So
while caches build, the trials that need none (SFT, base, few-shot) go first, and those that need
one start as slots free up, by when their cache is (nearly) ready.

The estimate is relative, in seconds of the H200 study bench (3B LoRA, batch 8, eager steps):
what matters is the order it gives, not its absolute value.
"""

from __future__ import annotations

import math
from typing import Collection, Sequence

from trainables.config import TrialConfig

#: One training step (eager LoRA step at the study's sizes, bench/gpu_speed.py --shape study).
STEP_S = 0.22
#: A split-gradient policy's step relative to a plain one (meta-λ: 297 vs 217 ms, the same bench).
SPLIT_GRADIENT_FACTOR = 1.4
#: One evaluated example (the study bench's trials decoded 55–100 examples/s).
EVAL_EXAMPLE_S = 0.012
#: A few-shot prompt's evaluation relative to a zero-shot one (37 vs 55 examples/s, base vs fewshot).
FEWSHOT_EVAL_FACTOR = 1.5


def _acts_on_grads(trial: TrialConfig) -> bool:
    """Whether the trial's λ policy needs split gradients (meta-λ, gradient conflict, or a composite of one)."""
    from trainables.policies import make_policy

    v = trial.variant
    if not v.uses_teacher:
        return False
    return make_policy(v.policy.name, v.policy.params, trial.data.tasks).acts_on_grads


def trial_cost(trial: TrialConfig) -> float:
    """Estimated seconds of one trial: its training steps and its evaluations over every (task, language) pair."""
    from trainables.data import available_langs

    v, train, ev = trial.variant, trial.train, trial.eval
    pairs = sum(len(available_langs(trial.data, task)) for task in trial.data.tasks)
    steps = train.steps if v.trains else 0
    step_s = STEP_S * (SPLIT_GRADIENT_FACTOR if steps and _acts_on_grads(trial) else 1.0)
    dev_evals = math.ceil(steps / train.eval_every) if steps else 1
    examples = pairs * (dev_evals * ev.dev_per_pair + ev.test_per_pair)
    per_example = EVAL_EXAMPLE_S * (FEWSHOT_EVAL_FACTOR if v.condition == "fewshot" else 1.0)
    return steps * step_s + examples * per_example


def launch_order(trials: Sequence[TrialConfig], building: Collection[str] = ()) -> list[TrialConfig]:
    """The trials that need none of the `building` teacher-cache modes, then the others; each group
    longest first (with nothing building: simply longest first)."""
    def waits(t: TrialConfig) -> bool:
        return t.variant.uses_teacher and t.variant.teacher_mode in building

    ordered = longest_first(trials)
    return [t for t in ordered if not waits(t)] + [t for t in ordered if waits(t)]


def longest_first(trials: Sequence[TrialConfig]) -> list[TrialConfig]:
    """The trials sorted by estimated cost, longest first (ties keep the sweep's order)."""
    return sorted(trials, key=lambda t: -trial_cost(t))

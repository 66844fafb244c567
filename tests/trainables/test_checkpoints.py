"""A trial resumed from its checkpoint continues the same run: after an interruption at any point past
a checkpoint, the resumed worker's reports and final weights equal an uninterrupted run's, exactly.

Exact because nothing in the run depends on wall time: the same ops in the same order on the same
threads (CPU), the weights, AdamW moments, schedule, λ-policy state, data position and RNG streams
(LoRA dropout draws from torch's RNG) all restored bit for bit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainables.test_loop_policies import CPU, assert_same_weights, base_config
from tests.trainables.test_loop_policies import cache as cache  # noqa: F401  (the module's teacher cache)
from tests.tuner.reference_run import computed
from trainables import checkpoints
from trainables.config import ModelConfig, PolicyConfig, TrialConfig, VariantConfig
from trainables.loop import run_worker

class Interrupted(Exception):
    """Stands for the worker's death after it reported a checkpoint."""


def _trial(cache: str, condition: str, policy: dict | None, finetune: str = "lora") -> TrialConfig:
    cfg = base_config(cache, steps=6, eval_every=2, warmup_steps=2)
    pc = PolicyConfig(**policy) if policy else PolicyConfig()
    return cfg.model_copy(update={"variant": VariantConfig(condition=condition, policy=pc),
                                  "model": ModelConfig(name="tiny", finetune=finetune)})


def _run(cfg: TrialConfig, keep: Path, stop_after: int | None = None,
         resume_from: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """run_worker with checkpoints copied to keep/<eval_index>; raises Interrupted after `stop_after` reports."""
    reports: list[dict[str, Any]] = []

    def with_checkpoint(metrics: dict[str, Any], d: Path) -> None:
        shutil.copytree(d, keep / str(metrics["eval_index"]))
        reports.append(metrics)
        if stop_after is not None and len(reports) >= stop_after:
            raise Interrupted

    model = run_worker(cfg, "t", 0, 1, CPU, reports.append, resume_from=resume_from,
                       report_checkpoint=with_checkpoint)
    return reports, {k: v.detach().clone() for k, v in model.state_dict().items()}


CASES = [
    ("sft", None, "lora"),
    ("distill", {"name": "fixed", "params": {"lam": 0.5}}, "lora"),
    ("distill", {"name": "loss_ratio", "params": {"lam0": 0.3, "decay": 0.5}}, "lora"),
    ("distill", {"name": "meta", "params": {"lr": 0.2, "every": 1, "val_batch": 2, "val_per_pair": 2}}, "lora"),
    ("distill", {"name": "warmup", "params": {"steps": 4, "lam": 0.5}}, "full"),
]


@pytest.mark.parametrize("condition,policy,finetune", CASES, ids=[f"{c[0]}-{(c[1] or {}).get('name', '')}-{c[2]}"
                                                                   for c in CASES])
def test_resumed_trial_equals_the_uninterrupted_run(tmp_path, cache, condition, policy, finetune):
    cfg = _trial(cache, condition, policy, finetune)
    full, full_weights = _run(cfg, tmp_path / "a")
    assert [r["step"] for r in full] == [2, 4, 6] and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["1", "2", "3"]

    with pytest.raises(Interrupted):  # dies after its first checkpoint (step 2)
        _run(cfg, tmp_path / "b", stop_after=1)
    resumed, resumed_weights = _run(cfg, tmp_path / "c", resume_from=tmp_path / "b" / "1")
    # It continues at step 3: its reports are the uninterrupted run's last two, none repeated.
    assert [r["step"] for r in resumed] == [4, 6] and [r["eval_index"] for r in resumed] == [2, 3]
    for got, want in zip(resumed, full[1:]):
        assert computed(got) == computed(want)
    assert_same_weights(resumed_weights, full_weights)


def test_a_finished_trial_resumed_reports_its_final_result_again(tmp_path, cache):
    cfg = _trial(cache, "sft", None)
    full, _ = _run(cfg, tmp_path / "a")
    again, _ = _run(cfg, tmp_path / "b", resume_from=tmp_path / "a" / "3")
    assert again == [full[-1]] and again[0]["final"]


def test_checkpoint_of_another_trial_shape_is_refused(tmp_path, cache):
    lora = _trial(cache, "sft", None, "lora")
    _run(lora, tmp_path / "a")
    with pytest.raises(checkpoints.CheckpointError, match="does not fit this trial's trainable weights"):
        _run(_trial(cache, "sft", None, "full"), tmp_path / "b", resume_from=tmp_path / "a" / "1")


def test_checkpoint_every_and_size(tmp_path, cache):
    cfg = _trial(cache, "sft", None)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": 2})})
    reports, _ = _run(cfg, tmp_path / "a")
    # Every 2nd evaluation, and always the last.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["2", "3"] and len(reports) == 3
    # LoRA: the adapters and their two AdamW moments (fp32), not the frozen base weights.
    payload = torch.load(tmp_path / "a" / "3" / checkpoints.TRAINER_FILE, weights_only=False)
    n_adapter = sum(t.numel() for t in payload["weights"].values())
    assert all("lora" in n for n in payload["weights"])
    assert 3 * 4 * n_adapter <= checkpoints.size_bytes(tmp_path / "a" / "3") <= 3 * 4 * n_adapter + 200_000


def test_student_tokens_count_prompt_and_answer(tmp_path, cache):
    """train/student_tokens_seen counts every non-pad token of the student's sequences, more than the answers."""
    reports, _ = _run(_trial(cache, "sft", None), tmp_path / "a")
    last = reports[-1]
    assert last["train/student_tokens_seen"] > last["train/tokens_seen"] > 0

"""KD transfers knowledge: a student distilled from a trained teacher's cached logits (teacher mode
`checkpoint`) beats the same student trained with λ=0 on held-out data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainables.alignment import collate, encode
from trainables.config import (DataConfig, EvalConfig, ModelConfig, PolicyConfig, ResourcesConfig, TeacherConfig,
                               TrainConfig, TrialConfig, VariantConfig)
from trainables.data import close_with_eos, load_records, subset
from trainables.losses import answer_ce
from trainables.loop import run_worker
from trainables.models import AnswerSpanLM, load_model, load_tokenizer
from trainables.prompts import render
from trainables.teacher.build import build_cache

TASKS = ["nli", "pos"]
#: A randomly initialised tiny Llama (not the pre-trained default): the test trains its own teacher.
RANDOM_TINY = {"pretrained": False, "hidden_size": 96, "num_layers": 2}


def _cfg(tmp: Path, steps: int, n_train: int, variant: VariantConfig, cache_paths: dict | None = None) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(name="tiny", finetune="full", tiny=RANDOM_TINY),
        data=DataConfig(tasks=TASKS, eval_langs=["en"], max_train_per_task=n_train,
                        synthetic_sizes={"train": 1000, "dev": 64, "test": 96}),
        teacher=TeacherConfig(top_k=256, checkpoint=str(tmp / "teacher"), batch_size=32),
        train=TrainConfig(steps=steps, batch_size=16, lr=3e-3, warmup_steps=10, eval_every=max(steps, 1)),
        eval=EvalConfig(dev_per_pair=4, test_per_pair=16, max_new_tokens={"nli": 2, "pos": 4}, save_predictions=False),
        resources=ResourcesConfig(cpus_per_worker=2), variant=variant, cache_paths=cache_paths or {},
    )


@torch.no_grad()
def heldout_ce(model: torch.nn.Module, cfg: TrialConfig) -> float:
    """Mean CE of the gold answer tokens on 96 held-out test examples per task (never trained on)."""
    tok = load_tokenizer(cfg.model)
    span = AnswerSpanLM(model.eval())
    total, count = 0.0, 0
    for task in TASKS:
        records = subset(load_records(cfg.data, task, "en", "test"), 96, 0)
        encs = [encode(tok, rp.prompt, rp.answer, close_with_eos(tok)) for rp in (render(tok, task, r) for r in records)]
        b = collate(encs, tok.pad_token_id)
        ce = answer_ce(span(b.input_ids, b.attention_mask, b.position_ids, b.rows, b.cols), b.targets)
        total, count = total + float(ce.sum()), count + ce.numel()
    return total / count


@pytest.mark.e2e
def test_distillation_from_a_trained_teacher_beats_sft_on_held_out_data(tmp_path, tiny_dir):
    report: dict = {}
    # 1. A teacher trained on the synthetic tasks (1,000 examples per task).
    teacher = run_worker(_cfg(tmp_path, 150, 1000, VariantConfig(condition="sft")), "teacher", 0, 1,
                         torch.device("cpu"), report.update)
    teacher.save_pretrained(tmp_path / "teacher")
    load_tokenizer(ModelConfig(name="tiny", tiny=RANDOM_TINY)).save_pretrained(tmp_path / "teacher")
    teacher_ce = heldout_ce(teacher, _cfg(tmp_path, 0, 1, VariantConfig()))
    untrained = load_model(ModelConfig(name="tiny", tiny=RANDOM_TINY), torch.device("cpu"), trainable=False)
    untrained_ce = heldout_ce(untrained, _cfg(tmp_path, 0, 1, VariantConfig()))
    # The synthetic tasks are learnable: SFT takes held-out answer CE far below the untrained model's.
    assert teacher_ce < untrained_ce - 3.0, (teacher_ce, untrained_ce)
    assert report["test/avg"] > 10.0, report["test/avg"]  # greedy-decoded headline metrics, 0–100

    # 2. Its top-K on a small slice (16 examples per task), zero-shot prompts: mode `checkpoint`.
    def variant(lam: float) -> VariantConfig:
        return VariantConfig(condition="distill", teacher_mode="checkpoint", policy=PolicyConfig(params={"lam": lam}))

    cache = build_cache(_cfg(tmp_path, 60, 16, variant(1.0)), tmp_path / "cache", "checkpoint")

    # 3. The same fresh student on the same slice, with and without KD.
    ce = {}
    for lam in (0.0, 1.0):
        cfg = _cfg(tmp_path, 60, 16, variant(lam), {"checkpoint": str(cache)})
        student = run_worker(cfg, f"student-{lam}", 0, 1, torch.device("cpu"), report.update)
        ce[lam] = heldout_ce(student, cfg)
    print(f"held-out answer CE: untrained {untrained_ce:.3f}, teacher {teacher_ce:.3f}, student λ=0 {ce[0.0]:.3f}, student λ=1 {ce[1.0]:.3f}")
    assert teacher_ce < ce[0.0]  # the teacher knows more than 16 examples teach
    assert ce[1.0] < ce[0.0] - 0.15, ce  # KD moves the student toward it on data neither saw

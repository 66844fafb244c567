"""A trial's checkpoint: everything a resumed worker needs to continue the same run, bit for bit.

    <dir>/trainer.pt        rank 0: trainable weights (LoRA adapters, or all weights when
                            finetune: full), AdamW and schedule state, the λ policy's state,
                            the step, the evaluation count, the loop's diagnostics, the last report
    <dir>/rng-rank<r>.pt    every rank: its torch (CPU and CUDA) and Python RNG states

The data order needs no state of its own: batches are drawn from a seeded stream, so a resumed
worker redraws the stream to the checkpoint's step (`batch_stream(..., start=step)`), and meta-λ's
dev stream to its number of draws. Checkpoints travel through Ray Train (`ray.train.report(...,
checkpoint=...)`, `ray.train.get_checkpoint()`); this module only writes and reads the folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: `state` below is a worker's `trainables.loop.TrainState` (not imported: the loop imports this module).
TrainState = Any

#: Bumped when the layout changes: an older checkpoint is refused, not misread.
FORMAT = 1
TRAINER_FILE = "trainer.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that does not belong to this trial's model, or an unknown format."""


@dataclass(frozen=True)
class Resumed:
    """Where a restored worker continues: the last completed step, evaluation count and report."""

    step: int
    eval_index: int
    last_report: dict[str, Any]


def trainable_weights(state: TrainState) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (the bare span's names, the same with or without DDP)."""
    assert state.plain_span is not None
    return {n: p.detach() for n, p in state.plain_span.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    """This process's RNG states."""
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def save(state: TrainState, directory: Path, step: int, eval_index: int, last_report: dict[str, Any]) -> None:
    """Write this rank's part of the trial's checkpoint at `step` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(_rng_state(), directory / f"rng-rank{state.rank}.pt")
    if state.rank != 0:
        return
    assert state.optimizer is not None and state.scheduler is not None
    d = state.diag
    payload = {
        "format": FORMAT,
        "step": step,
        "eval_index": eval_index,
        "tokens_seen": state.tokens_seen,
        "student_tokens_seen": state.student_tokens_seen,
        "dev_draws": state.dev_draws,
        "weights": {n: t.clone().cpu() for n, t in trainable_weights(state).items()},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "policy": state.policy.state_dict() if state.policy is not None else None,
        "diagnostics": {"student_ema": dict(d.student_ema), "teacher_ema": dict(d.teacher_ema),
                        "crossover": dict(d.crossover)},
        "last_report": last_report,
    }
    tmp = directory / f".{TRAINER_FILE}.tmp"
    torch.save(payload, tmp)
    tmp.replace(directory / TRAINER_FILE)


def load(state: TrainState, directory: Path) -> Resumed:
    """Restore a worker's state (built by `setup` for the same trial) from a checkpoint folder."""
    path = directory / TRAINER_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {TRAINER_FILE}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {payload.get('format')!r}, this version reads {FORMAT}")
    assert state.optimizer is not None and state.scheduler is not None
    own = trainable_weights(state)
    saved = payload["weights"]
    if set(saved) != set(own) or any(saved[n].shape != own[n].shape for n in own):
        missing = sorted(set(own) ^ set(saved))[:3] or [n for n in own if saved[n].shape != own[n].shape][:3]
        raise CheckpointError(f"checkpoint {path} does not fit this trial's trainable weights (e.g. {missing})")
    with torch.no_grad():
        for n, t in own.items():
            t.copy_(saved[n])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    if state.policy is not None and payload["policy"] is not None:
        state.policy.load_state_dict(payload["policy"])
    diag = payload["diagnostics"]
    state.diag.student_ema.update(diag["student_ema"])
    state.diag.teacher_ema.update(diag["teacher_ema"])
    state.diag.crossover.update(diag["crossover"])
    state.tokens_seen = payload["tokens_seen"]
    state.student_tokens_seen = payload["student_tokens_seen"]
    state.dev_draws = payload["dev_draws"]
    rng_path = directory / f"rng-rank{state.rank}.pt"
    if rng_path.is_file():  # a different world size resumes with fresh RNG streams on the new ranks
        rng = torch.load(rng_path, map_location="cpu", weights_only=False)
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return Resumed(payload["step"], payload["eval_index"], payload["last_report"])


def size_bytes(directory: Path) -> int:
    """Bytes on disk of a checkpoint folder."""
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())

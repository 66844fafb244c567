"""The interface every λ policy implements (λ is the KD weight: loss = CE + λ·KD).

A policy sees, for the N answer tokens of a batch, their task, the teacher's entropy and the
detached per-token CE and KD values, and returns λ per token. Policies that act after the
backward passes (gradient conflict) set `needs_split_grads` and receive both gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trainables.tasks.schema import TASKS


@dataclass
class PolicyInputs:
    """What a policy may look at when choosing λ for one batch (all tensors [N], detached)."""

    step: int
    task_ids: torch.Tensor          # index into TASKS of each answer token
    ce: torch.Tensor                # student CE per token
    kd: torch.Tensor                # KD per token
    teacher_entropy: torch.Tensor | None = None
    vocab_size: int = 0
    top_k: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class LambdaPolicy:
    """Base class: subclasses implement `weights`; the rest has sensible defaults."""

    name: str = "base"
    #: Whether the loop must back-propagate CE and KD separately and call `after_backward`.
    needs_split_grads: bool = False

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """λ for each answer token ([N], ≥ 0)."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float]:
        """Scalars describing the policy's current state (logged with each report)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The policy's state, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state from `state_dict`."""


def per_task_mean(values: torch.Tensor, task_ids: torch.Tensor) -> dict[str, float]:
    """Mean of a per-token tensor for each task present in the batch."""
    out: dict[str, float] = {}
    for i, task in enumerate(TASKS):
        sel = task_ids == i
        if bool(sel.any()):
            out[task] = float(values[sel].float().mean())
    return out

"""`fixed`: the same λ for every token, task and step (the study's baseline policy)."""

from __future__ import annotations

import torch

from trainables.policies.base import LambdaPolicy, PolicyInputs, number


class FixedLambda(LambdaPolicy):
    """λ_i = lam for every answer token."""

    name = "fixed"

    def __init__(self, lam: float) -> None:
        self.lam = number(self.name, "lam", lam)

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """A constant λ for every token."""
        return torch.full_like(inp.ce, self.lam, dtype=torch.float32)

"""`fixed`: the same λ for every token, task and step (the study's baseline policy)."""

from __future__ import annotations

import torch

from trainables.policies.base import LambdaPolicy, PolicyInputs


class FixedLambda(LambdaPolicy):
    """λ_i = lam for every answer token."""

    name = "fixed"

    def __init__(self, lam: float) -> None:
        if lam < 0:
            raise ValueError(f"policy fixed: lam must be ≥ 0, got {lam}")
        self.lam = float(lam)

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """A constant λ for every token."""
        return torch.full_like(inp.ce, self.lam, dtype=torch.float32)

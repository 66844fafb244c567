"""`loss_ratio`: λ that keeps λ·KD on the scale of CE (the study's Strategy 3).

    λ_t = clip(λ_0 · EMA_t(L_CE) / EMA_t(L_KD), λ_min, λ_max)

L_CE and L_KD are the step's mean per-token CE and (unweighted) KD over the global batch. The
EMA starts at the first step's value, then EMA_t = d·EMA_{t−1} + (1 − d)·L_t with decay d, and
is updated before λ_t is computed (λ_t sees step t's losses). One λ for every token of a step.
When EMA(L_KD) is 0 (student equals teacher) the ratio is unbounded and λ_t = λ_max.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainables.metric_keys import train_key
from trainables.policies.base import LambdaPolicy, PolicyInputs, RunningMeans, number


class LossRatio(LambdaPolicy):
    """λ_t = λ_0·EMA(CE)/EMA(KD), clipped to [λ_min, λ_max]."""

    name = "loss_ratio"

    def __init__(self, lam0: float = 0.05, decay: float = 0.9, lam_min: float = 0.0, lam_max: float = 1.0) -> None:
        self.lam0 = number(self.name, "lam0", lam0)
        self.decay = number(self.name, "decay", decay, 0.0, 1.0)
        if self.decay == 1.0:
            raise ValueError("policy loss_ratio: decay must be in [0, 1), got 1 (the EMA would never move)")
        self.lam_min = number(self.name, "lam_min", lam_min)
        self.lam_max = number(self.name, "lam_max", lam_max)
        if self.lam_max < self.lam_min:
            raise ValueError(f"policy loss_ratio: lam_max must be ≥ lam_min ({self.lam_min:g}), got {self.lam_max:g}")
        self.ema_ce: float | None = None
        self.ema_kd: float | None = None
        self.lam = min(self.lam_max, max(self.lam_min, self.lam0))  # until the first batch with tokens
        self._log = RunningMeans()

    def update(self, ce: float, kd: float) -> float:
        """Fold one step's mean losses into the EMAs and return the new λ."""
        d = self.decay
        self.ema_ce = ce if self.ema_ce is None else d * self.ema_ce + (1 - d) * ce
        self.ema_kd = kd if self.ema_kd is None else d * self.ema_kd + (1 - d) * kd
        ratio = self.ema_ce / self.ema_kd if self.ema_kd > 0 else math.inf
        self.lam = min(self.lam_max, max(self.lam_min, self.lam0 * ratio))
        return self.lam

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """The step's λ for every token (after folding this step's losses into the EMAs)."""
        # Token-weighted means over all ranks, so every rank computes the same λ.
        sums = inp.global_sum(torch.stack([inp.ce.float().sum(), inp.kd.float().sum(),
                                           torch.tensor(float(inp.ce.numel()), device=inp.ce.device)]))
        ce_sum, kd_sum, n = sums.tolist()
        if n > 0:
            self.update(ce_sum / n, kd_sum / n)
            self._log.add(train_key("loss_ratio_lam"), self.lam)
        return torch.full_like(inp.ce, self.lam, dtype=torch.float32)

    def diagnostics(self) -> dict[str, float]:
        """Mean λ since the last call and the current EMAs of CE and KD."""
        out = self._log.flush()
        if self.ema_ce is not None and self.ema_kd is not None:
            out[train_key("loss_ratio_ema_ce")] = self.ema_ce
            out[train_key("loss_ratio_ema_kd")] = self.ema_kd
        return out

    def state_dict(self) -> dict[str, Any]:
        """The EMAs and the current λ."""
        return {"ema_ce": self.ema_ce, "ema_kd": self.ema_kd, "lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the EMAs and λ."""
        self.ema_ce, self.ema_kd, self.lam = state["ema_ce"], state["ema_kd"], state["lam"]

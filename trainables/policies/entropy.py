"""`entropy`: λ per answer token from the teacher's confidence (the study's Strategy 1).

    λ_i = clip(λ_max · (1 − H_i / log M), 0, λ_max)

H_i is the teacher's entropy at the position predicting token i and M the number of outcomes
it is normalised by: the vocabulary size V (`normalise: vocab`) or the cached K (`topk`). A
confident teacher (NLI's label word) gets λ near λ_max; a spread-out one (mid-sequence POS
tags) gets less. With `topk`, entropies above log K give λ = 0 (the clip).

`entropy_source`:
  * `exact` — the entropy over the whole vocabulary, stored in the cache when it was built;
  * `topk_tail` — recomputed from the cached top-K log-probs plus the tail bucket taken as one
    outcome. Merging the V−K tail tokens into one outcome can only lower the entropy, so
    H_topk_tail ≤ H_exact ≤ H_topk_tail + p_tail·log(V − K): a lower bound, and the λ it gives
    is an upper bound on the exact policy's λ (by at most λ_max·p_tail·log(V−K)/log M). It is
    what a cache without the entropy column (or a teacher seen only through its top-K) allows.
"""

from __future__ import annotations

import math

import torch

from trainables.metric_keys import diag_key
from trainables.policies.base import LambdaPolicy, PolicyInputs, choice, number
from trainables.tasks.schema import TASKS

NORMALISE: tuple[str, ...] = ("vocab", "topk")
SOURCES: tuple[str, ...] = ("exact", "topk_tail")


def topk_tail_entropy(topk_logprobs: torch.Tensor, tail_logmass: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the K+1 buckets top-K + tail: [N, K], [N] -> [N] fp32 (a lower bound on H)."""
    lp = torch.cat([topk_logprobs.float(), tail_logmass.float().unsqueeze(-1)], dim=-1)  # [N, K+1]
    live = torch.isfinite(lp)  # an empty tail (log 0 = -inf) contributes 0·log 0 = 0
    safe = torch.where(live, lp, 0.0)
    h = -torch.where(live, safe.exp() * safe, 0.0).sum(-1)
    return h.clamp_min(0.0)  # fp16 log-probs can round the sum a hair below 0


class EntropyWeighted(LambdaPolicy):
    """λ_i = λ_max·(1 − H_i / log M), clipped to [0, λ_max]; logs its λ distribution per task."""

    name = "entropy"

    def __init__(self, lam_max: float = 0.5, normalise: str = "vocab", entropy_source: str = "exact") -> None:
        self.lam_max = number(self.name, "lam_max", lam_max)
        self.normalise = choice(self.name, "normalise", normalise, NORMALISE)
        self.entropy_source = choice(self.name, "entropy_source", entropy_source, SOURCES)
        # Token values since the last report, per task: the percentiles need the pooled tokens
        # (a few thousand floats per report interval at the study's batch sizes).
        self._lams: dict[str, list[torch.Tensor]] = {t: [] for t in TASKS}
        self._ents: dict[str, list[torch.Tensor]] = {t: [] for t in TASKS}

    def entropy(self, inp: PolicyInputs) -> torch.Tensor:
        """The teacher entropy H_i per token (nats) from the configured source."""
        if self.entropy_source == "exact":
            if inp.teacher_entropy is None:
                raise ValueError("policy entropy: entropy_source exact needs the cache's teacher_entropy")
            return inp.teacher_entropy.float()
        if inp.teacher_topk_logprobs is None or inp.teacher_tail_logmass is None:
            raise ValueError("policy entropy: entropy_source topk_tail needs the teacher's top-K and tail")
        return topk_tail_entropy(inp.teacher_topk_logprobs, inp.teacher_tail_logmass)

    def log_outcomes(self, inp: PolicyInputs) -> float:
        """log M, the entropy of a uniform teacher under the chosen normalisation."""
        m = inp.vocab_size if self.normalise == "vocab" else (inp.top_k or (
            inp.teacher_topk_logprobs.shape[-1] if inp.teacher_topk_logprobs is not None else 0))
        if m < 2:
            raise ValueError(f"policy entropy: normalise {self.normalise} needs at least 2 outcomes, got {m}")
        return math.log(m)

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """λ_max·(1 − H/log M) per token, clipped to [0, λ_max]."""
        h = self.entropy(inp)
        lam = (self.lam_max * (1.0 - h / self.log_outcomes(inp))).clamp(0.0, self.lam_max)
        lam_cpu, h_cpu, ids = lam.detach().cpu(), h.detach().cpu(), inp.task_ids.cpu()
        for i, task in enumerate(TASKS):
            sel = ids == i
            if bool(sel.any()):
                self._lams[task].append(lam_cpu[sel])
                self._ents[task].append(h_cpu[sel])
        return lam

    def diagnostics(self) -> dict[str, float]:
        """Per task since the last call: mean, p10 and p90 of this policy's λ, and mean entropy."""
        out: dict[str, float] = {}
        for task in TASKS:
            if not self._lams[task]:
                continue
            lam = torch.cat(self._lams[task]).double()
            p10, p90 = torch.quantile(lam, torch.tensor([0.1, 0.9], dtype=lam.dtype)).tolist()
            out[diag_key(task, "entropy_lam_mean")] = float(lam.mean())
            out[diag_key(task, "entropy_lam_p10")] = p10
            out[diag_key(task, "entropy_lam_p90")] = p90
            out[diag_key(task, "entropy_h_mean")] = float(torch.cat(self._ents[task]).double().mean())
            self._lams[task].clear()
            self._ents[task].clear()
        return out

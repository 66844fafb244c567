"""`grad_conflict`: drop KD when its gradient disagrees with CE's (the study's Strategy 2).

    cos   = ⟨g_CE, g_KD⟩ / (‖g_CE‖·‖g_KD‖)      over a subset of the trainable parameters
    λ_eff = λ · max(0, cos)
    update: g_CE + max(0, cos)·g_KD              (g_KD is the gradient of the λ-weighted KD)

Cost: the loop back-propagates CE and KD separately instead of their sum — one extra backward
pass per step (with `per_task: true`, one KD backward per task present instead of one in all),
plus dot products over the chosen subset; the loop reports the split backward's wall time as
`train/split_backward_s`. `params` only limits what the cosine looks at (`all` trainable
parameters, `lora` adapters only, or the `last_layer` decoder block's trainable parameters); the
update always uses the full gradients.

Granularity (a design decision): by default one global cosine per step, which scales KD for
every token alike and costs the one extra backward. `per_task: true` computes cos_t between g_CE
and each task's KD gradient and applies λ·max(0, cos_t) to that task's tokens, at one more
backward per task present. The global cosine is logged in both modes. An undefined cosine (a
zero gradient on the subset) counts as 0: no evidence of agreement, no KD.
"""

from __future__ import annotations

import math
import re

import torch

from trainables.metric_keys import diag_key, train_key
from trainables.policies.base import (
    ALL_TOKENS,
    GradRequest,
    LambdaPolicy,
    PolicyInputs,
    RunningMeans,
    SplitGrads,
    choice,
    number,
)

SUBSETS: tuple[str, ...] = ("all", "lora", "last_layer")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def select_params(names: list[str], subset: str) -> list[int]:
    """Indices of the parameters in `subset` (all | lora | last_layer) of the named trainable parameters."""
    if subset == "all":
        idx = list(range(len(names)))
    elif subset == "lora":
        idx = [j for j, n in enumerate(names) if "lora_" in n]
    else:
        layers = [int(m.group(1)) if (m := _LAYER.search(n)) else -1 for n in names]
        last = max(layers, default=-1)
        idx = [j for j, layer in enumerate(layers) if layer == last and last >= 0]
    if not idx:
        raise ValueError(f"policy grad_conflict: params {subset} matches no trainable parameter "
                         "(lora needs model.finetune lora; last_layer needs '.layers.<i>.' in the names)")
    return idx


def subset_dot(a: list[torch.Tensor], b: list[torch.Tensor], idx: list[int]) -> float:
    """⟨a, b⟩ over the parameters idx, as if each were flattened and concatenated (fp32 per tensor, fp64 sum)."""
    parts = [torch.dot(a[j].reshape(-1).float(), b[j].reshape(-1).float()) for j in idx]
    return float(torch.stack(parts).double().sum())


def cosine(dot: float, sq_a: float, sq_b: float) -> float | None:
    """⟨a, b⟩ / (‖a‖·‖b‖) from the dot and squared norms; None when either norm is 0."""
    if sq_a <= 0 or sq_b <= 0:
        return None
    return max(-1.0, min(1.0, dot / math.sqrt(sq_a * sq_b)))


class GradConflict(LambdaPolicy):
    """λ_eff = λ·max(0, cos(g_CE, g_KD)), globally per step or per task."""

    name = "grad_conflict"
    acts_on_grads = True

    def __init__(self, lam: float = 0.5, params: str = "all", per_task: bool = False) -> None:
        self.lam = number(self.name, "lam", lam)
        self.subset = choice(self.name, "params", params, SUBSETS)
        if not isinstance(per_task, bool):
            raise ValueError(f"policy grad_conflict: per_task must be true or false, got {per_task!r}")
        self.per_task = per_task
        self._idx: list[int] | None = None
        self._log = RunningMeans()

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """λ before the gradient check (the loop reports λ_eff after it)."""
        return torch.full_like(inp.ce, self.lam, dtype=torch.float32)

    def grad_request(self, step: int) -> GradRequest:
        """Every step: CE and KD gradients apart (KD per task when per_task), combined by this policy."""
        return GradRequest(combine=True, by_task=self.per_task)

    def on_split_grads(self, step: int, grads: SplitGrads) -> dict[str, float]:
        """max(0, cos) per KD group; logs the global cosine (and each task's)."""
        if grads.ce is None or not grads.kd:
            return {}
        if self._idx is None:
            self._idx = select_params(grads.names, self.subset)
        idx, ce, groups = self._idx, grads.ce, list(grads.kd)
        sq_ce = subset_dot(ce, ce, idx)
        dot_ce = {g: subset_dot(ce, grads.kd[g], idx) for g in groups}
        gram = {(g, h): subset_dot(grads.kd[g], grads.kd[h], idx)
                for i, g in enumerate(groups) for h in groups[i:]}
        # The global cosine from the groups: g_KD = Σ_g g_KD_g, so ⟨g_CE, g_KD⟩ and ‖g_KD‖² are sums.
        sq_all = sum(v if g == h else 2 * v for (g, h), v in gram.items())
        cos_all = cosine(sum(dot_ce.values()), sq_ce, sq_all)
        if cos_all is not None:
            self._log.add(train_key("grad_conflict_cos"), cos_all)
            self._log.add(train_key("grad_conflict_neg_frac"), float(cos_all < 0))
        if not self.per_task:
            return {ALL_TOKENS: max(0.0, cos_all or 0.0)}
        out: dict[str, float] = {}
        for g in groups:
            cos_g = cosine(dot_ce[g], sq_ce, gram[(g, g)])
            if cos_g is not None:
                self._log.add(diag_key(g, "grad_conflict_cos"), cos_g)
            out[g] = max(0.0, cos_g or 0.0)
        return out

    def diagnostics(self) -> dict[str, float]:
        """Mean global cosine, fraction of steps with cos < 0, and per-task cosines (per_task)."""
        return self._log.flush()

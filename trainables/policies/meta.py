"""`meta`: λ per task learned by first-order bilevel optimisation (the study's Strategy 4).

    λ_t = sigmoid(θ_t) · λ_max,  θ_t = 0 at the start (λ_t = λ_max/2) unless warm-started

Every `every` inner steps (default 10), on that step's batch, the loop back-propagates each
task's KD separately: g_dist_t = ∇ Σ_{i∈t} KD_i / n over the trainable parameters only. After
the optimizer step, one multilingual dev batch (`val_batch` examples, default 16, drawn from
≤ `val_per_pair` dev examples of every task × evaluation language) gives g_val = ∇ CE_val at the
updated parameters, and

    θ_t.grad = −⟨g_val, g_dist_t⟩,   one Adam step (lr `lr`, default 0.05) on θ.

First-order reasoning: the step moved the parameters by −η(g_CE + Σ_t λ_t·g_dist_t), so
∂CE_val/∂λ_t ≈ −η·⟨g_val, g_dist_t⟩; when KD on task t helps the dev loss, θ_t rises. Adam
normalises the scale, so η is dropped. This is the protocol of SEED_NOTES.md; θ is one tensor
over all tasks, so a task absent from the probed batch gets a zero gradient (Adam's momentum
still moves it).

The probe reads gradients only: the update itself is the usual ∇(CE + λ·KD). It costs one
backward per task present and one dev forward+backward every `every` steps, and holds the
per-task KD gradients (tasks × trainable parameters) from the probe until the dev gradient.

`warm_start: {task: λ}` sets θ_t = logit(λ_t/λ_max) (the study's suggestion: start from the
task prior); each value must be in [0, λ_max). With lr = 0 the policy is `fixed` at λ_max/2.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from trainables.policies.base import (
    DevSpec,
    GradRequest,
    LambdaPolicy,
    PolicyInputs,
    RunningMeans,
    SplitGrads,
    integer,
    number,
    task_table,
)
from trainables.metric_keys import diag_key, train_key
from trainables.tasks.schema import TASKS


class MetaLambda(LambdaPolicy):
    """λ_t = sigmoid(θ_t)·λ_max, θ updated by Adam on −⟨g_val, g_dist_t⟩ every `every` steps."""

    name = "meta"
    acts_on_grads = True

    def __init__(self, tasks: list[str], lam_max: float = 1.0, lr: float = 0.05, every: int = 10,
                 val_batch: int = 16, val_per_pair: int = 500, warm_start: dict[str, float] | None = None) -> None:
        self.lam_max = number(self.name, "lam_max", lam_max, lo_open=True)
        self.lr = number(self.name, "lr", lr)
        self.every = integer(self.name, "every", every, 1)
        self.dev = DevSpec(per_pair=integer(self.name, "val_per_pair", val_per_pair, 1),
                           batch_size=integer(self.name, "val_batch", val_batch, 1))
        start = task_table(self.name, "warm_start", warm_start or {}, hi=self.lam_max, hi_open=True)
        self.tasks = list(tasks)
        # θ_t = logit(λ_t / λ_max); λ_t = 0 maps to θ = -inf, which we keep finite (λ ≈ 1e-9·λ_max).
        theta = [_logit(start[t] / self.lam_max) if t in start else 0.0 for t in TASKS]
        self.theta = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float64))
        self.opt = torch.optim.Adam([self.theta], lr=self.lr)
        self._probe: dict[str, tuple[list[torch.Tensor], float]] = {}
        self._log = RunningMeans()
        self._updates = 0

    def lambdas(self) -> torch.Tensor:
        """λ_t for every task in TASKS order ([5], fp64)."""
        return torch.sigmoid(self.theta.detach()) * self.lam_max

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """λ of each token's task."""
        return self.lambdas().to(device=inp.task_ids.device, dtype=torch.float32)[inp.task_ids]

    def grad_request(self, step: int) -> GradRequest | None:
        """Every `every` steps: each task's KD gradient on this batch (read only)."""
        return GradRequest(combine=False, by_task=True) if step % self.every == 0 else None

    def on_split_grads(self, step: int, grads: SplitGrads) -> dict[str, float]:
        """Keep each task's KD gradient for the dev step after the update."""
        lam = self.lambdas()
        # The loop's groups are λ-weighted: ∇ Σ_{i∈t} λ_i·KD_i / n. λ_i = λ_t·w_i (w_i = 1 alone,
        # another policy's factor in a product), so dividing by λ_t gives ∂loss/∂λ_t's gradient.
        self._probe = {t: (g, float(lam[TASKS.index(t)])) for t, g in grads.kd.items()}
        return {}

    def after_step(self, step: int, val_grads: Callable[[], list[torch.Tensor]] | None) -> None:
        """The outer step: θ_t.grad = −⟨g_val, g_dist_t⟩, one Adam step."""
        if not self._probe:
            return
        if val_grads is None:
            raise ValueError("policy meta: the loop gave no dev gradients (val_grads)")
        g_val = val_grads()
        grad = torch.zeros_like(self.theta)
        for task, (g_kd, lam_t) in self._probe.items():
            dot = float(torch.stack([torch.dot(a.reshape(-1).float(), b.reshape(-1).float())
                                     for a, b in zip(g_val, g_kd)]).double().sum()) / lam_t
            grad[TASKS.index(task)] = -dot
            self._log.add(diag_key(task, "meta_dot"), dot)
        self._probe = {}
        self.theta.grad = grad
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._updates += 1

    def diagnostics(self) -> dict[str, float]:
        """Current λ_t per task of the sweep, mean ⟨g_val, g_dist_t⟩ since the last call, update count."""
        out = {**self._log.flush(), train_key("meta_updates"): float(self._updates)}
        self._updates = 0
        lam = self.lambdas()
        out.update({diag_key(t, "meta_lam"): float(lam[TASKS.index(t)]) for t in self.tasks})
        return out

    def state_dict(self) -> dict[str, Any]:
        """θ and the Adam state."""
        return {"theta": self.theta.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore θ and the Adam state."""
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        self.opt.load_state_dict(state["opt"])


def _logit(p: float) -> float:
    """log(p / (1 − p)), with p floored at 1e-9 so λ = 0 warm starts stay finite."""
    p = max(p, 1e-9)
    return math.log(p / (1.0 - p))

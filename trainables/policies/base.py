"""The interface every λ policy implements (λ is the KD weight: loss = CE + λ·KD).

A policy sees, for the N answer tokens of a batch, their task, the teacher's entropy and top-K,
and the detached per-token CE and KD values, and returns λ per token (`weights`).

Policies that act on gradients (gradient conflict, meta-λ) also answer `grad_request(step)`.
On such steps the loop back-propagates CE and the λ-weighted KD separately (KD per task when
asked) and hands the gradients to `on_split_grads`:
  * `combine` requests: the policy returns one multiplier per KD group and the update is
    g_CE + Σ_g m_g·g_KD_g (gradient conflict);
  * observe-only requests: the policy only reads the KD gradients and the update is the usual
    ∇(CE + λ·KD) (meta-λ reads per-task KD gradients for its outer step).
After the optimizer step the loop calls `after_step`, which may ask for the gradient of the
gold-answer CE on a multilingual dev batch (meta-λ's outer objective; see `DevSpec`).

`diagnostics()` returns scalars since its previous call; the loop merges them into each report.
Keys follow the result layout: `diag/<task>/<name>` for per-task values, `train/<name>` otherwise,
built with `trainables.metric_keys.diag_key` / `train_key`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainables.tasks.schema import TASKS

#: The KD-gradient group that holds every token when a policy does not split by task.
ALL_TOKENS = "all"


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class PolicyInputs:
    """What a policy may look at when choosing λ for one batch (all tensors [N] or [N, K], detached)."""

    step: int                       # 1-based optimizer step
    task_ids: torch.Tensor          # index into TASKS of each answer token
    ce: torch.Tensor                # student CE per token
    kd: torch.Tensor                # KD per token
    teacher_entropy: torch.Tensor | None = None        # exact teacher entropy (nats), from the cache
    teacher_topk_logprobs: torch.Tensor | None = None  # [N, K] teacher top-K log-probs (T = 1)
    teacher_tail_logmass: torch.Tensor | None = None   # [N] log of the teacher's mass outside the top-K
    vocab_size: int = 0
    top_k: int = 0
    #: Sums a tensor over data-parallel ranks (identity on one worker), for batch-level statistics.
    global_sum: Callable[[torch.Tensor], torch.Tensor] = _identity
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GradRequest:
    """The separate gradients a policy needs at one step."""

    combine: bool   # True: the policy builds the update from g_CE and the KD groups' gradients
    by_task: bool   # True: one KD gradient per task present (one backward each), else one for all tokens


@dataclass
class SplitGrads:
    """Gradients over the trainable parameters, summed over data-parallel ranks.

    kd[group][j] is ∇ Σ_{i ∈ group} λ_i·KD_i / n for parameter j (n: the global answer-token
    count), with λ the policy's own weights; ce is ∇ Σ_i CE_i / n (None for observe-only requests).
    """

    names: list[str]
    ce: list[torch.Tensor] | None
    kd: dict[str, list[torch.Tensor]]


@dataclass(frozen=True)
class DevSpec:
    """The dev batches a policy reads in `after_step`: examples per (task, language) in the pool, batch size."""

    per_pair: int
    batch_size: int


class LambdaPolicy:
    """Base class: subclasses implement `weights`; the rest has do-nothing defaults."""

    name: str = "base"
    #: Whether `grad_request` may ask for split gradients (at most one such policy in a product).
    acts_on_grads: bool = False
    #: Dev batches this policy needs in `after_step` (None: none, the loop builds no dev pool).
    dev: DevSpec | None = None

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """λ for each answer token ([N], ≥ 0)."""
        raise NotImplementedError

    def grad_request(self, step: int) -> GradRequest | None:
        """The separate gradients this policy needs at `step` (None: the usual single backward)."""
        return None

    def on_split_grads(self, step: int, grads: SplitGrads) -> dict[str, float]:
        """Multiplier per KD group for the update (combine requests; a missing group means 1)."""
        return {}

    def after_step(self, step: int, val_grads: Callable[[], list[torch.Tensor]] | None) -> None:
        """Called after each optimizer step; `val_grads()` is ∇ dev CE over the trainable parameters."""

    def diagnostics(self) -> dict[str, float]:
        """Scalars describing the policy since the previous call (logged with each report)."""
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


class RunningMeans:
    """Means of named scalars between two `flush` calls (a policy's diagnostics)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, name: str, value: float) -> None:
        """Add one observation of `name`."""
        self.sums[name] += float(value)
        self.counts[name] += 1

    def flush(self) -> dict[str, float]:
        """The means since the last flush; resets."""
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}
        self.sums.clear()
        self.counts.clear()
        return out


# ----------------------------------------------------------------------- parameter checks


def number(policy: str, param: str, value: Any, lo: float = 0.0, hi: float = math.inf,
           lo_open: bool = False) -> float:
    """`value` as a float, or a ValueError naming the policy, the parameter and the allowed range."""
    lo_b = "(" if lo_open else "["
    hi_b = "]" if math.isfinite(hi) else ")"
    allowed = f"{lo_b}{lo:g}, {hi:g}{hi_b}" if math.isfinite(hi) else f"{lo_b}{lo:g}, ∞)"
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"policy {policy}: {param} must be a number in {allowed}, got {value!r}") from None
    if not (math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi):
        raise ValueError(f"policy {policy}: {param} must be in {allowed}, got {value!r}")
    return x


def integer(policy: str, param: str, value: Any, lo: int = 0, hi: int = 10**9) -> int:
    """`value` as an int, or a ValueError naming the policy, the parameter and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not lo <= value <= hi:
        raise ValueError(f"policy {policy}: {param} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def choice(policy: str, param: str, value: Any, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`, else a ValueError naming the policy and the parameter."""
    if value not in allowed:
        raise ValueError(f"policy {policy}: {param} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def task_table(policy: str, param: str, values: Any, hi: float = math.inf, hi_open: bool = False) -> dict[str, float]:
    """A {task: λ} dict checked against TASKS and the range [0, hi] (or [0, hi) when hi_open)."""
    if not isinstance(values, dict):
        raise ValueError(f"policy {policy}: {param} must be a mapping task → value, got {values!r}")
    unknown = [t for t in values if t not in TASKS]
    if unknown:
        raise ValueError(f"policy {policy}: {param} has unknown task(s) {unknown}; allowed: {', '.join(TASKS)}")
    out = {t: number(policy, f"{param}.{t}", v, 0.0, hi) for t, v in values.items()}
    bad = {t: v for t, v in out.items() if hi_open and v >= hi}
    if bad:
        raise ValueError(f"policy {policy}: {param} values must be in [0, {hi:g}), got {bad}")
    return out

"""`schedule` (and `warmup`): any policy's λ multiplied by a function of the step.

    λ_i(step) = s(t) · inner_i,   t = step − 1 (optimizer steps already taken; step is 1-based)

Kinds of s(t), each in [0, 1]:
    constant   1
    linear     1 − (1 − final)·min(t / steps, 1)                       (1 at step 1, final from step steps+1)
    cosine     final + (1 − final)·½·(1 + cos(π·min(t / steps, 1)))
    step       gamma^⌊t / every⌋
    warmup     1 while t < steps, then final (default 0): KD for the first `steps` steps only,
               the study's §7 "distillation warm-up" (100 steps of KD, then SFT)

The inner policy is `inner: {name, params}` or the shorthand `lam: x` for `fixed` at x. It is
consulted every step, even where s = 0, so its state (EMAs, meta-λ's θ) keeps evolving.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from trainables.metric_keys import train_key
from trainables.policies.base import GradRequest, LambdaPolicy, PolicyInputs, SplitGrads, choice, integer, number

KINDS: tuple[str, ...] = ("constant", "linear", "cosine", "step", "warmup")
#: The parameters each kind takes besides the inner policy (the first of each is required).
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "linear": ("steps", "final"),
    "cosine": ("steps", "final"),
    "step": ("every", "gamma"),
    "warmup": ("steps", "final"),
}


def scale(kind: str, step: int, steps: int = 0, final: float = 0.0, every: int = 1, gamma: float = 1.0) -> float:
    """s(t) of a schedule kind at 1-based `step` (t = step − 1)."""
    t = step - 1
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return 1.0 - (1.0 - final) * min(t / steps, 1.0)
    if kind == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(t / steps, 1.0)))
    if kind == "step":
        return gamma ** (t // every)
    if kind == "warmup":
        return 1.0 if t < steps else final
    raise ValueError(f"policy schedule: kind must be one of {', '.join(KINDS)}, got {kind!r}")


class Schedule(LambdaPolicy):
    """λ = s(step)·inner λ for a schedule kind s."""

    name = "schedule"

    def __init__(self, inner: LambdaPolicy, kind: str, alias: str = "schedule", **params: Any) -> None:
        self.name = alias  # `warmup` is this policy with kind warmup: errors name what the user wrote
        self.kind = choice(self.name, "kind", kind, KINDS)
        allowed = KIND_PARAMS[self.kind]
        extra = sorted(set(params) - set(allowed))
        if extra:
            raise ValueError(f"policy {self.name}: kind {self.kind} takes {', '.join(allowed) or 'no parameters'}"
                             f" (besides inner or lam), got {extra}")
        if allowed and allowed[0] not in params:
            raise ValueError(f"policy {self.name}: kind {self.kind} needs {allowed[0]}")
        lo_steps = 0 if self.kind == "warmup" else 1  # warm-up of 0 steps is plain SFT; a decay needs ≥ 1
        self.steps = integer(self.name, "steps", params.get("steps", 1), lo_steps)
        self.every = integer(self.name, "every", params.get("every", 1), 1)
        self.final = number(self.name, "final", params.get("final", 0.0), 0.0, 1.0)
        self.gamma = number(self.name, "gamma", params.get("gamma", 0.5), 0.0, 1.0)
        self.inner = inner
        self.acts_on_grads = inner.acts_on_grads
        self.dev = inner.dev
        self.current = 1.0

    def scale(self, step: int) -> float:
        """s(t) at 1-based `step`."""
        return scale(self.kind, step, self.steps, self.final, self.every, self.gamma)

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """s(step) times the inner policy's λ."""
        self.current = self.scale(inp.step)
        return self.inner.weights(inp) * self.current

    def grad_request(self, step: int) -> GradRequest | None:
        """The inner policy's request."""
        return self.inner.grad_request(step)

    def on_split_grads(self, step: int, grads: SplitGrads) -> dict[str, float]:
        """The inner policy's multipliers (its cosines and meta-gradients do not depend on s)."""
        return self.inner.on_split_grads(step, grads)

    def after_step(self, step: int, val_grads: Callable[[], list[torch.Tensor]] | None) -> None:
        """The inner policy's after-step work."""
        self.inner.after_step(step, val_grads)

    def diagnostics(self) -> dict[str, float]:
        """The inner policy's diagnostics and the current scale s."""
        return {**self.inner.diagnostics(), train_key("schedule_scale"): self.current}

    def state_dict(self) -> dict[str, Any]:
        """The inner policy's state."""
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the inner policy's state."""
        self.inner.load_state_dict(state["inner"])

"""`product`: λ_i = Π_m λ_i^(m), the elementwise product of several policies' λ.

E.g. a task prior times entropy weights (`λ_max: 1` for the entropy member, so the prior sets
the scale), or a task prior times gradient-conflict suppression. At most one member may act on
gradients (grad_conflict, meta): the product forwards the loop's split gradients to it. Members'
diagnostics are merged; a key two members both report gets the member's index as a suffix.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from trainables.policies.base import GradRequest, LambdaPolicy, PolicyInputs, SplitGrads


class Product(LambdaPolicy):
    """λ = Π of the members' λ, token by token."""

    name = "product"

    def __init__(self, members: list[LambdaPolicy]) -> None:
        if not members:
            raise ValueError("policy product: policies must list at least one policy")
        on_grads = [m for m in members if m.acts_on_grads]
        if len(on_grads) > 1:
            raise ValueError(f"policy product: at most one member may act on gradients, got "
                             f"{[m.name for m in on_grads]}")
        self.members = list(members)
        self.grad_member: LambdaPolicy | None = on_grads[0] if on_grads else None
        self.acts_on_grads = self.grad_member is not None
        self.dev = next((m.dev for m in members if m.dev is not None), None)

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """The product of every member's λ."""
        out = self.members[0].weights(inp).float()
        for m in self.members[1:]:
            out = out * m.weights(inp).float()
        return out

    def grad_request(self, step: int) -> GradRequest | None:
        """The gradient-acting member's request, if any."""
        return self.grad_member.grad_request(step) if self.grad_member else None

    def on_split_grads(self, step: int, grads: SplitGrads) -> dict[str, float]:
        """The gradient-acting member's multipliers."""
        return self.grad_member.on_split_grads(step, grads) if self.grad_member else {}

    def after_step(self, step: int, val_grads: Callable[[], list[torch.Tensor]] | None) -> None:
        """Every member's after-step work."""
        for m in self.members:
            m.after_step(step, val_grads)

    def diagnostics(self) -> dict[str, float]:
        """The members' diagnostics merged (colliding keys suffixed with the member index)."""
        out: dict[str, float] = {}
        for i, m in enumerate(self.members):
            for key, value in m.diagnostics().items():
                out[f"{key}_{i}" if key in out else key] = value
        return out

    def state_dict(self) -> dict[str, Any]:
        """The members' states, in order."""
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the members' states."""
        for m, s in zip(self.members, state["members"]):
            m.load_state_dict(s)

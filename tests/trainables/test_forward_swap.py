"""Swapping a module's forward: isinstance and parameters kept, one subclass per class and forward,
reversible, and the original class found again after any number of swaps."""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainables.forward_swap import original_class, swap_forward


def doubled(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 2 * nn.Linear.forward(self, x)


def test_swap_is_reversible_and_keeps_type_and_parameters():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    x = torch.randn(4, 3)
    want = a(x)
    names = [n for n, _ in a.named_parameters()]
    swap_forward(a, doubled, "Twice")
    swap_forward(b, doubled, "Twice")
    assert type(a) is type(b) and type(a).__name__ == "TwiceLinear" and isinstance(a, nn.Linear)
    assert original_class(a) is nn.Linear and original_class(nn.Linear(1, 1)) is nn.Linear
    torch.testing.assert_close(a(x), 2 * want)
    swap_forward(a, doubled, "Twice")  # swapping again stays one level deep
    assert type(a).__bases__ == (nn.Linear,)
    assert [n for n, _ in a.named_parameters()] == names
    assert type(copy.deepcopy(a)) is type(a)
    swap_forward(a, doubled, "Twice", enabled=False)
    assert type(a) is nn.Linear
    torch.testing.assert_close(a(x), want)

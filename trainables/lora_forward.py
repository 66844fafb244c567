"""A LoRA projection's forward with the adapter's product accumulated into the base GEMM's output.

PEFT computes `result + lora_B(lora_A(dropout(x))) * scaling`: besides the two rank-r GEMMs, a
multiply and an add over the whole [tokens, out] output forward, and the multiply again backward.
A 3B Llama student adapts 7 projections in each of 28 layers, so a training step runs ~600 such
full-size element-wise kernels, each a pass over 6–15 MB of activations (study shapes).

Here the scaling is folded into B's weight as it is cast to the activations' dtype (an [out, r]
tensor: a tiny kernel) and the second GEMM adds its product into the base output in place
(`addmm_`, beta = 1: cuBLAS accumulates into C). The same dropout module is called once on the same
input, so the same random mask is drawn; the result differs from PEFT's by rounding only (one
rounding of the sum instead of three).

Only the plain case takes this path: adapters on and not merged, one active vanilla adapter (no
DoRA or other variant, no bias on B), a plain `nn.Linear` base and no per-call `adapter_names`;
everything else runs PEFT's own forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.forward_swap import original_class, swap_forward


def _lean_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """base(x) + s·B·A·dropout(x), the adapter's product added into the base output by one GEMM."""
    base = self.base_layer
    names = self.active_adapters
    name = names[0] if len(names) == 1 else None
    if (args or kwargs or self.disable_adapters or self.merged or name not in self.lora_A
            or name in self.lora_variant or type(base) is not nn.Linear or self.lora_B[name].bias is not None
            or self.lora_A[name].bias is not None):
        return original_class(self).forward(self, x, *args, **kwargs)
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    flat = x.reshape(-1, x.shape[-1])
    out = F.linear(flat, base.weight, base.bias)  # [tokens, out], a tensor of its own (not a view)
    h = F.linear(self.lora_dropout[name](flat), a.to(x.dtype))  # [tokens, r]
    out.addmm_(h, (b * self.scaling[name]).to(x.dtype).t())
    return out.view(*x.shape[:-1], out.shape[-1])


def use_lean_lora(model: nn.Module, enabled: bool = True) -> int:
    """Switch the PEFT LoRA linear layers of `model` to the lean forward (or back to PEFT's with
    `enabled=False`); returns how many layers compute that way afterwards."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:  # no PEFT: no LoRA layers
        return 0
    n = 0
    for module in model.modules():
        if original_class(module) is not LoraLinear:  # PEFT's subclasses (quantised layers...) keep their own
            continue
        swap_forward(module, _lean_forward, "Lean", enabled)
        n += enabled
    return n

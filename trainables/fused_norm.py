"""RMSNorm layers computed by torch's own `rms_norm` (one fused kernel on a GPU) instead of
transformers' formula.

transformers' Llama RMSNorm runs about seven kernels per call (copy to fp32, square, mean, add ε,
rsqrt, multiply, copy back, multiply by the weight), each reading or writing a full fp32 copy of
the activations; a 3B Llama calls it 57 times per forward. In the profile of a decoding step
(bench/results/generation-h100-2026-12-08-run5.txt) its mean, copies and element-wise kernels are
a large share of the step's ~8.5 ms of GPU work; in the evaluation's prefill, ~10% of it.
`torch.nn.functional.rms_norm` computes the same normalisation in fp32 internally and, on CUDA,
runs it as one kernel forward and one backward.

Only classes known to compute `weight · x / sqrt(mean(x²) + ε)` are swapped (`KNOWN`; Gemma's
`(1 + weight)` form is not among them), and each class is checked once against its own forward on
a probe input before any of its layers is swapped: a class whose output differs is left alone.
The result differs from transformers' by rounding only (the weight is applied before the single
rounding to the activations' dtype instead of after a first one).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from trainables.forward_swap import original_class, swap_forward

#: RMSNorm classes of transformers whose forward is weight · x · rsqrt(mean(x²) + ε), in fp32.
KNOWN = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")
#: Largest relative difference from the class's own forward (fp32 probe) accepted as rounding.
PROBE_RTOL = 1e-5


def _fused_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The layer's RMSNorm by torch's `rms_norm`, in the input's dtype."""
    weight = self.weight if self.weight.dtype == hidden_states.dtype else self.weight.to(hidden_states.dtype)
    return F.rms_norm(hidden_states, (hidden_states.shape[-1],), weight, self.variance_epsilon)


@cache
def _agrees(cls: type) -> bool:
    """Whether torch's rms_norm reproduces `cls`'s own forward on a seeded fp32 probe."""
    layer = cls(64, eps=1e-6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(64, generator=g) + 0.5)
        x = torch.randn(3, 5, 64, generator=g) * 3
        want = layer(x)
        got = _fused_forward(layer, x)
    return bool(torch.allclose(got, want, rtol=PROBE_RTOL, atol=1e-6))


def fused_norm_layers(model: nn.Module) -> list[nn.Module]:
    """The RMSNorm layers of `model` that `use_fused_norm` swaps (known classes that pass the probe)."""
    out = []
    for module in model.modules():
        cls = original_class(module)
        if cls.__name__ in KNOWN and hasattr(module, "variance_epsilon") and _agrees(cls):
            out.append(module)
    return out


def use_fused_norm(model: nn.Module, enabled: bool = True) -> int:
    """Switch `model`'s RMSNorm layers to torch's fused rms_norm (or back to transformers' own
    forward with `enabled=False`); returns how many layers compute that way afterwards."""
    layers = fused_norm_layers(model)
    for module in layers:
        swap_forward(module, _fused_forward, "Fused", enabled)
    return len(layers) if enabled else 0

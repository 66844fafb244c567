"""LoRA adapters folded into copies of their base weights while a model is evaluated.

While decoding, each adapted projection runs its base GEMM plus two rank-r GEMMs, their scaling
and an add: on the 3B shape with all 7 projections adapted, about half of the ~2,300 kernels of a
decoding step (bench/results/NOTES.md, the profile of generation run 4). With W' = W + s·B·A the
projection is one GEMM again.

PEFT's own `merge_adapter` / `unmerge_adapter` add s·B·A into the bf16 weight in place and
subtract it afterwards; bf16 rounding makes the weight after the round trip differ from the one
before, so every evaluation would perturb the model being trained. Here W' is a new tensor, the
layer's adapter is switched off for the block, and the original weight object is put back
untouched afterwards. The cost is one copy of the adapted weights for the block's duration
(2.8 B parameters, 5.6 GB in bf16, on the 3B shape with every projection adapted).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """The PEFT LoRA linear layers of `model` whose active adapters can be merged into one weight
    (plain LoRA, adapters on, not merged already; DoRA and other variants are left alone)."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:  # no PEFT: nothing to merge
        return []
    out = []
    for module in model.modules():
        if not isinstance(module, LoraLinear) or module.merged or module.disable_adapters:
            continue
        active = [a for a in module.active_adapters if a in module.lora_A]
        if active and not any(module.use_dora.get(a, False) for a in active):
            out.append(module)
    return out


def merged_bytes(model: nn.Module) -> int:
    """Bytes the merged copies of `model`'s LoRA base weights take (what `merged_lora` allocates)."""
    total = 0
    for module in lora_layers(model):
        weight = module.get_base_layer().weight
        total += weight.numel() * weight.element_size()
    return total


@contextmanager
def merged_lora(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, every mergeable LoRA layer of `model` computes with W + Σ s·B·A (a copy of
    its base weight) and its adapters off; yields how many layers were merged. Afterwards the
    original weights, adapter switches and requires_grad flags are exactly as before."""
    if not enabled:
        yield 0
        return
    layers = lora_layers(model)
    flags = [(p, p.requires_grad) for layer in layers for p in layer.parameters()]
    swapped: list[tuple[nn.Module, nn.Module, nn.Parameter]] = []
    try:
        with torch.no_grad():
            for layer in layers:
                base = layer.get_base_layer()
                weight = base.weight
                merged = weight.detach().to(torch.float32, copy=True)  # never the weight itself
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        merged += layer.get_delta_weight(name).float()
                swapped.append((layer, base, weight))
                base.weight = nn.Parameter(merged.to(weight.dtype), requires_grad=False)
                del merged
                layer.enable_adapters(False)
        yield len(swapped)
    finally:
        for layer, base, weight in reversed(swapped):
            base.weight = weight
            layer.enable_adapters(True)
        for p, flag in flags:
            p.requires_grad_(flag)

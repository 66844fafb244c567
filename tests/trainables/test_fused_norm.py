"""RMSNorm by torch's rms_norm: the same values as transformers' forward (up to one rounding), the
same gradients, only known and probe-checked classes swapped, and the swap reversible."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from trainables.config import ModelConfig
from trainables.fused_norm import fused_norm_layers, use_fused_norm
from trainables.models import load_model

CPU = torch.device("cpu")


def reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float64, written out: weight · x / sqrt(mean(x²) + eps)."""
    x64 = x.double()
    return weight.double() * x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + eps)


def norm(dim: int = 48, eps: float = 1e-5, seed: int = 0) -> LlamaRMSNorm:
    layer = LlamaRMSNorm(dim, eps=eps)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(dim, generator=torch.Generator().manual_seed(seed)) + 0.5)
    return layer


def test_fp32_values_and_gradients_match_transformers_and_the_formula():
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 9, 48, generator=g) * 5).requires_grad_()
    hf, fused = norm(), norm()
    assert use_fused_norm(fused) == 1 and type(fused).__name__ == "FusedLlamaRMSNorm"
    assert isinstance(fused, LlamaRMSNorm)

    want, got = hf(x), fused(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.double(), reference(x.detach(), hf.weight.detach(), 1e-5), rtol=1e-5, atol=1e-5)

    upstream = torch.randn(want.shape, generator=g)
    (gx_want, gw_want) = torch.autograd.grad(want, (x, hf.weight), upstream)
    (gx_got, gw_got) = torch.autograd.grad(got, (x, fused.weight), upstream)
    torch.testing.assert_close(gx_got, gx_want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw_got, gw_want, rtol=1e-5, atol=1e-5)


def test_bf16_rounds_once_so_it_is_never_further_from_the_exact_value():
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(64, 256, generator=g) * 4).bfloat16()
    hf, fused = norm(256).bfloat16(), norm(256).bfloat16()
    use_fused_norm(fused)
    exact = reference(x, hf.weight, 1e-5)
    got, want = fused(x), hf(x)
    assert got.dtype == torch.bfloat16
    # One rounding to bf16 (≤ half an ulp, ~2⁻⁹ relative) against transformers' two.
    err_got = ((got.double() - exact).abs() / exact.abs().clamp(min=1e-3)).max().item()
    err_want = ((want.double() - exact).abs() / exact.abs().clamp(min=1e-3)).max().item()
    assert err_got <= 2 ** -8 + 1e-6
    assert err_got <= err_want + 1e-9
    # …and the two differ by at most one bf16 ulp of the value.
    ulp = 2.0 ** (torch.floor(torch.log2(exact.abs().clamp(min=1e-30))) - 7)
    assert bool(((got.double() - want.double()).abs() <= ulp + 1e-12).all())


def test_whole_model_fp32_logits_and_the_swap_is_reversible(tiny_dir):
    model = load_model(ModelConfig(name="tiny", fused_norm=False), CPU, trainable=False)
    layers = model.config.num_hidden_layers
    assert not any(type(m).__name__.startswith("Fused") for m in model.modules())
    ids = torch.randint(0, model.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        assert use_fused_norm(model) == 2 * layers + 1  # two per decoder layer and the final norm
        got = model(input_ids=ids).logits
        assert use_fused_norm(model, enabled=False) == 0
        back = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(back, want)
    assert all(type(m) is LlamaRMSNorm for m in fused_norm_layers(model))
    names = [n for n, _ in model.named_parameters()]
    use_fused_norm(model)
    assert [n for n, _ in model.named_parameters()] == names  # checkpoints see the same parameters
    twin = copy.deepcopy(model)
    assert type(twin.model.norm) is type(model.model.norm)


def test_load_model_swaps_by_default_trainable_or_not(tiny_dir):
    frozen = load_model(ModelConfig(name="tiny"), CPU, trainable=False)
    student = load_model(ModelConfig(name="tiny"), CPU, trainable=True)  # PEFT LoRA around it
    for model in (frozen, student):
        norms = [m for m in model.modules() if isinstance(m, LlamaRMSNorm)]
        assert norms and all(type(m).__name__ == "FusedLlamaRMSNorm" for m in norms)


def test_unknown_or_different_classes_are_left_alone():
    class GemmaRMSNorm(nn.Module):  # (1 + weight): not in KNOWN
        def __init__(self, dim: int, eps: float = 1e-6) -> None:
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.zeros(dim)), eps

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    class LlamaRMSNorm(nn.Module):  # a known name computing something else: the probe refuses it
        def __init__(self, dim: int, eps: float = 1e-6) -> None:
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.ones(dim)), eps

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.weight * x / (x.abs().mean(-1, keepdim=True) + self.variance_epsilon)

    model = nn.Sequential(GemmaRMSNorm(16), LlamaRMSNorm(16))
    assert use_fused_norm(model) == 0
    assert [type(m).__name__ for m in model] == ["GemmaRMSNorm", "LlamaRMSNorm"]


@pytest.mark.parametrize("bad", ["yes please", 3])
def test_config_rejects_non_booleans(bad):
    with pytest.raises(ValueError, match="fused_norm"):
        ModelConfig(fused_norm=bad)

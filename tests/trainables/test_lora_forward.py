"""The lean LoRA forward: the same outputs and gradients as PEFT's (same dropout masks drawn), PEFT's
own forward wherever the plain case does not hold, reversible, and the product's default."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from trainables.config import ModelConfig
from trainables.lora_forward import use_lean_lora
from trainables.models import adapters_in_activation_dtype, load_model

CPU = torch.device("cpu")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.down_proj = nn.Linear(24, 40, bias=False), nn.Linear(40, 24, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.tanh(self.q_proj(x)))


def student(dropout: float, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A two-projection block with LoRA (r=4, α=8) whose B factors are non-zero, as after training."""
    torch.manual_seed(seed)
    model = get_peft_model(Block().to(dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                          target_modules=["q_proj", "down_proj"]))
    adapters_in_activation_dtype(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape) * 0.3)
    return model.train()


def reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block written out from its weights: W x + s·B·A·x per projection (no dropout)."""
    def proj(layer: LoraLinear, h: torch.Tensor) -> torch.Tensor:
        a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        return h @ layer.base_layer.weight.double().T + layer.scaling["default"] * (h @ a.T @ b.T)
    inner = model.base_model.model
    return proj(inner.down_proj, torch.tanh(proj(inner.q_proj, x.double())))


def grads(model: nn.Module, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(seed)  # the dropout masks
    xx = x.clone().requires_grad_()
    out = model(xx)
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.autograd.grad((out.float() * torch.linspace(-1, 1, out.shape[-1])).sum(), [xx, *params])
    return out, g[0], list(g[1:])


def test_the_plain_case_never_calls_pefts_forward(monkeypatch):
    lean = student(0.3)
    use_lean_lora(lean)
    x = torch.randn(3, 5, 24)
    want = lean(x)  # before PEFT's forward is broken

    def boom(*args, **kwargs):
        raise AssertionError("PEFT's forward ran")

    monkeypatch.setattr(LoraLinear, "forward", boom)
    lean(x).sum().backward()
    with pytest.raises(AssertionError, match="PEFT's forward ran"):
        use_lean_lora(lean, enabled=False)
        lean(x)
    assert want.shape == (3, 5, 24)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fp32_outputs_and_gradients_equal_peft_and_the_formula(dropout):
    peft, lean = student(dropout), student(dropout)
    assert use_lean_lora(lean) == 2 and all(type(m).__name__ == "LeanLinear" for m in lean.modules()
                                              if isinstance(m, LoraLinear))
    x = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(1))
    for seed in (0, 1):  # two draws of the masks; lean and PEFT draw the same ones
        out_p, gx_p, gp = grads(peft, x, seed)
        out_l, gx_l, gl = grads(lean, x, seed)
        torch.testing.assert_close(out_l, out_p, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx_l, gx_p, rtol=1e-5, atol=1e-6)
        for a, b in zip(gl, gp):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in gl)  # the adapters learn
    if dropout == 0.0:
        torch.testing.assert_close(lean(x).double(), reference(lean, x), rtol=1e-6, atol=1e-6)


def test_bf16_activations_with_fp32_factors_match_peft_within_rounding():
    peft, lean = student(0.0, torch.bfloat16), student(0.0, torch.bfloat16)
    use_lean_lora(lean)
    assert lean.base_model.model.q_proj.lora_A["default"].weight.dtype == torch.float32  # the master copy
    x = torch.randn(4, 7, 24, generator=torch.Generator().manual_seed(2)).bfloat16()
    out_p, _, gp = grads(peft, x, 0)
    out_l, _, gl = grads(lean, x, 0)
    assert out_l.dtype == torch.bfloat16
    exact = reference(lean, x.float())
    # One rounding of the sum instead of three: never much further from the exact block.
    err_l = (out_l.double() - exact).abs().max().item()
    err_p = (out_p.double() - exact).abs().max().item()
    assert err_l <= 1.5 * err_p + 1e-3
    for a, b in zip(gl, gp):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item())


def test_peft_forward_runs_wherever_the_plain_case_does_not_hold():
    lean = student(0.0)
    use_lean_lora(lean)
    x = torch.randn(2, 3, 24)
    base_only = lean.base_model.model
    with torch.no_grad():
        want_base = base_only.down_proj.base_layer(torch.tanh(base_only.q_proj.base_layer(x)))
        with lean.disable_adapter():  # adapters off: the base model's output
            torch.testing.assert_close(lean(x), want_base)
        lean.base_model.model.q_proj.merge()  # merged: PEFT's path, the same function
        torch.testing.assert_close(lean(x).double(), reference(student(0.0), x), rtol=1e-5, atol=1e-5)
        lean.base_model.model.q_proj.unmerge()
    # A bias on B is PEFT's business (lora_bias): the lean path must not drop it.
    torch.manual_seed(0)
    biased = get_peft_model(Block(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], lora_bias=True))
    with torch.no_grad():
        biased.base_model.model.q_proj.lora_B["default"].bias.fill_(0.5)
        want = biased(x)
        use_lean_lora(biased)
        torch.testing.assert_close(biased(x), want)


def test_reversible_and_the_product_default(tiny_dir):
    model = load_model(ModelConfig(name="tiny"), CPU, trainable=True)
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert layers and all(type(m).__name__ == "LeanLinear" for m in layers)
    names = [n for n, _ in model.named_parameters()]
    assert use_lean_lora(model, enabled=False) == 0 and all(type(m) is LoraLinear for m in layers)
    assert [n for n, _ in model.named_parameters()] == names
    off = load_model(ModelConfig(name="tiny", lean_lora=False), CPU, trainable=True)
    assert all(type(m) is LoraLinear for m in off.modules() if isinstance(m, LoraLinear))
    use_lean_lora(model)
    assert type(copy.deepcopy(model).base_model.model.model.layers[0].self_attn.q_proj).__name__ == "LeanLinear"


def test_whole_student_loss_and_gradients_equal_peft(tiny_dir):
    """The tiny default's student with dropout 0.05, one training forward and backward each way."""
    ids = torch.randint(0, 2000, (2, 21), generator=torch.Generator().manual_seed(4))
    results = []
    for lean in (False, True):
        torch.manual_seed(0)
        model = load_model(ModelConfig(name="tiny", lean_lora=lean), CPU, trainable=True).train()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.05)
        torch.manual_seed(7)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (loss_p, g_p), (loss_l, g_l) = results
    torch.testing.assert_close(loss_l, loss_p, rtol=1e-5, atol=1e-6)
    assert g_l.keys() == g_p.keys()
    for name in g_p:
        torch.testing.assert_close(g_l[name], g_p[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", ["maybe", 2])
def test_config_rejects_non_booleans(bad):
    with pytest.raises(ValueError, match="lean_lora"):
        ModelConfig(lean_lora=bad)

"""Evaluation with LoRA folded into weight copies: the same outputs as the adapters computed
separately, and the model exactly as it was afterwards (weights, adapter switches, gradients)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainables.config import ModelConfig, TrialConfig
from trainables.memory_plan import adapted_parameters
from trainables.merged_lora import lora_layers, merged_bytes, merged_lora
from trainables.models import add_lora

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_student(dtype: torch.dtype = torch.float32, targets: list[str] = TARGETS) -> torch.nn.Module:
    """A 2-layer random Llama with the product's LoRA adapters, every lora_B non-zero."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = add_lora(LlamaForCausalLM(cfg).to(dtype), ModelConfig(lora_r=8, lora_alpha=16, lora_dropout=0.0,
                                                                   lora_targets=targets))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, bool]]:
    """Every parameter by name: the object, a copy of its value, its requires_grad flag."""
    return {n: (p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def test_merged_logits_equal_the_adapters_computed_apart():
    model = lora_student()
    ids = torch.randint(0, 300, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        apart = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        with merged_lora(model) as n:
            merged = model(input_ids=ids).logits
    assert n == 2 * len(TARGETS)
    assert not torch.allclose(apart, base, atol=1e-3)  # the adapters do change the output
    torch.testing.assert_close(merged, apart, atol=1e-5, rtol=1e-5)


def test_the_model_is_exactly_as_before_afterwards_even_after_an_error():
    model = lora_student()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="inside"):
        with merged_lora(model):
            # Inside: base weights are new tensors and the adapters are off.
            q = model.base_model.model.model.layers[0].self_attn.q_proj
            assert q.base_layer.weight is not before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"][0]
            assert q.disable_adapters
            raise RuntimeError("inside")
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for name, (obj, value, flag) in before.items():
        assert after[name] is obj and torch.equal(obj, value) and obj.requires_grad == flag, name
    assert all(not layer.disable_adapters for layer in lora_layers(model))
    ids = torch.arange(10)[None]
    with torch.no_grad():
        again = model(input_ids=ids).logits
        with merged_lora(model):
            pass
        assert torch.equal(model(input_ids=ids).logits, again)


def test_bf16_merge_rounds_once_and_leaves_the_bf16_weights_bitwise_unchanged():
    model = lora_student(torch.bfloat16)
    before = snapshot(model)
    layer = lora_layers(model)[0]
    expected = (layer.base_layer.weight.float() + layer.get_delta_weight("default").float()).to(torch.bfloat16)
    with merged_lora(model):
        assert torch.equal(layer.base_layer.weight, expected)
    assert all(torch.equal(p, before[n][1]) for n, p in model.named_parameters())


def test_off_or_without_lora_nothing_changes():
    model = lora_student()
    with merged_lora(model, enabled=False) as n:
        assert n == 0 and all(not layer.disable_adapters for layer in lora_layers(model))
    plain = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with merged_lora(plain) as n:
        assert n == 0
    assert merged_bytes(plain) == 0


def test_the_memory_plan_counts_the_merged_copies_as_the_layers_have_them():
    for targets in (TARGETS, ["q_proj", "v_proj"]):
        model = lora_student(targets=targets)
        cfg = TrialConfig.model_validate({"model": {"lora_targets": targets}})
        config = model.base_model.model.config
        assert adapted_parameters(cfg, config) * 4 == merged_bytes(model)  # fp32 model: 4 bytes each

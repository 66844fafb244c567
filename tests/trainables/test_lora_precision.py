"""LoRA adapters compute in the activations' dtype while their weights stay fp32 (master copies)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainables.config import ModelConfig
from trainables.models import ActivationDtypeLinear, adapters_in_activation_dtype, add_lora

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(dtype: torch.dtype) -> LlamaForCausalLM:
    """A 2-layer random Llama in `dtype`."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).to(dtype)


def peft_default(model: torch.nn.Module) -> torch.nn.Module:
    """The same adapters with PEFT's own fp32 compute path (input cast to fp32)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS))


def nonzero_adapters(model: torch.nn.Module) -> None:
    """Give every lora_B a non-zero value (PEFT initialises it to zero: the adapter would be a no-op)."""
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def reference_and_ours(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same non-zero adapters on a `dtype` model: PEFT's own compute path, and ours."""
    reference = peft_default(tiny_llama(dtype))
    nonzero_adapters(reference)
    ours = copy.deepcopy(reference)
    adapters_in_activation_dtype(ours)
    return reference, ours


def test_every_factor_is_converted_and_names_are_unchanged() -> None:
    base = tiny_llama(torch.bfloat16)
    reference = peft_default(copy.deepcopy(base))
    model = add_lora(base, ModelConfig(name="x", lora_r=8, lora_alpha=16, lora_dropout=0.0, lora_targets=TARGETS))
    factors = [m for m in model.modules() if isinstance(m, ActivationDtypeLinear)]
    assert len(factors) == 2 * len(TARGETS) * 2  # A and B, 7 projections, 2 layers
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)
    assert adapters_in_activation_dtype(model) == 0  # idempotent: nothing left to convert


def test_bf16_model_matches_the_fp32_adapter_path_and_trains_fp32_weights() -> None:
    reference, ours = reference_and_ours(torch.bfloat16)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(2))

    seen: set[torch.dtype] = set()
    for m in ours.modules():
        if "lora_A" in type(m).__name__ or isinstance(m, ActivationDtypeLinear):
            m.register_forward_pre_hook(lambda _m, args: seen.add(args[0].dtype))
    ref_logits = reference(input_ids=ids).logits.float()
    our_logits = ours(input_ids=ids).logits
    assert seen == {torch.bfloat16}  # the adapters' GEMMs see bf16 activations, not an fp32 copy
    assert our_logits.dtype == torch.bfloat16
    # Same function up to bf16 rounding of the adapter product (fp32 path vs bf16 GEMM).
    err = (our_logits.float() - ref_logits).abs().max().item()
    scale = ref_logits.abs().max().item()
    assert err < 0.02 * scale
    # The adapters change the output (the comparison above is not comparing two base models).
    with ours.disable_adapter():
        base_logits = ours(input_ids=ids).logits.float()
    assert (base_logits - ref_logits).abs().max().item() > 10 * err

    our_logits.float().sum().backward()
    ref_logits.sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), reference.named_parameters()):
        if "lora_" not in name:
            assert p.grad is None
            continue
        assert p.grad is not None and p.grad.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0)
        assert cos > 0.99, name


def test_fp32_model_is_exactly_peft() -> None:
    reference, ours = reference_and_ours(torch.float32)
    ids = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trips_through_plain_peft(dtype: torch.dtype) -> None:
    model = peft_default(tiny_llama(dtype))
    nonzero_adapters(model)
    adapters_in_activation_dtype(model)
    fresh = peft_default(tiny_llama(dtype))
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected

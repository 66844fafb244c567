"""Decoding attention over grouped KV heads: the same output as transformers' SDPA with the heads
expanded, the same greedy text, and the model's attention setting restored afterwards."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainables.decode_attention import NAME, decoding_attention, grouped_query_attention
from trainables.generation import greedy_generate

CPU = torch.device("cpu")


class Heads(torch.nn.Module):
    """What transformers' SDPA function reads from an attention module."""

    def __init__(self, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.training = heads // kv_heads, True, False


@pytest.mark.parametrize("heads,kv_heads", [(24, 8), (4, 2), (4, 4)])
def test_output_equals_sdpa_with_expanded_heads(heads, kv_heads):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    b, length, d = 3, 11, 16
    q = torch.randn(b, heads, 1, d, dtype=torch.float64)
    k, v = torch.randn(b, kv_heads, length, d, dtype=torch.float64), torch.randn(b, kv_heads, length, d, dtype=torch.float64)
    visible = torch.rand(b, 1, 1, length) > 0.3
    visible[..., 0] = True
    mask = torch.zeros(b, 1, 1, length, dtype=torch.float64).masked_fill_(~visible, torch.finfo(torch.float64).min)
    ours, _ = grouped_query_attention(Heads(heads, kv_heads), q, k, v, mask, scaling=d ** -0.5)
    ref, _ = sdpa_attention_forward(Heads(heads, kv_heads), q, k, v, mask, scaling=d ** -0.5)
    assert ours.shape == ref.shape == (b, 1, heads, d)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # Independently: softmax over the visible keys of each query head's KV head (h // group).
    group = heads // kv_heads
    for h in range(heads):
        scores = (q[:, h, 0, None, :] * k[:, h // group]).sum(-1) * d ** -0.5 + mask[:, 0, 0]
        expect = (scores.softmax(-1)[..., None] * v[:, h // group]).sum(-2)
        torch.testing.assert_close(ours[:, 0, h], expect, rtol=1e-10, atol=1e-10)


def test_greedy_text_unchanged_and_setting_restored(tiny_tokenizer):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    cfg._attn_implementation = "sdpa"
    lm = LlamaForCausalLM(cfg).eval()
    prompts = [tiny_tokenizer.encode(t) for t in ("a b c", "the cat sat on the mat", "x")]
    grouped, _ = greedy_generate(lm, tiny_tokenizer, prompts, 10, CPU, 2**30, 8, grouped_attention=True)
    expanded, _ = greedy_generate(lm, tiny_tokenizer, prompts, 10, CPU, 2**30, 8, grouped_attention=False)
    assert grouped == expanded and any(grouped)
    assert lm.config._attn_implementation == "sdpa"
    with decoding_attention(lm):
        assert lm.config._attn_implementation == NAME
    lm.config._attn_implementation = "eager"
    with decoding_attention(lm):  # only SDPA models are switched
        assert lm.config._attn_implementation == "eager"

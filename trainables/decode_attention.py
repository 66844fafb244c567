"""Attention for batched greedy decoding over the fixed-size KV cache, without copying the
grouped keys and values once per query head.

Llama-3's attention has 24 query heads over 8 key/value heads. With a prepared mask (which the
fixed-size cache needs), transformers' SDPA path expands the keys and values to 24 heads
(`repeat_kv`) in every layer at every decoding step: on the 3B shape that copy and its reading
were most of a step's memory traffic. For one new token per sequence, the query heads that share
a key/value head are instead stacked as that head's queries, so attention reads the cache as
stored. Prompts (several tokens per sequence) keep transformers' SDPA function.

`decoding_attention(lm)` switches a model to this function for the duration of a block (the
decoder's layers read their attention function from the config at every call).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

#: The name this function is registered under in transformers' attention and mask interfaces.
NAME = "lamtune_decode"
#: The implementations this function stands in for (others, e.g. flash attention, are left alone).
REPLACES = ("sdpa",)


def grouped_query_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention output [B, T, H, D] (transformers' layout) of query [B, H, T, D] over key/value
    [B, KV, L, D]; for T = 1 without expanding the KV heads, else transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, t, d = query.shape
    kv_heads = key.shape[1]
    if t != 1 or heads == kv_heads or heads % kv_heads:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # Query head h uses KV head h // rep (repeat_kv's order): stack each group as one head's queries.
    grouped = query.reshape(b, kv_heads, heads // kv_heads, d)
    mask = attention_mask[:, :, :, :key.shape[-2]] if attention_mask is not None else None
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(b, heads, 1, d).transpose(1, 2).contiguous(), None


def _register() -> None:
    """Add the function to transformers' attention (and mask) interfaces, once."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, grouped_query_attention)
    try:  # masks come prepared (4-D); registered so that a release that looks the name up finds one
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionMaskInterface.register(NAME, sdpa_mask)
    except ImportError:
        pass


@contextmanager
def decoding_attention(lm: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, `lm` (a *ForCausalLM) attends with `grouped_query_attention` if it used SDPA."""
    config = lm.config
    before = getattr(config, "_attn_implementation", None)
    if not enabled or before not in REPLACES:
        yield
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before

"""A fixed-size KV cache for batched greedy decoding, and the additive attention masks over it.

Every tensor keeps its address for the whole batch (the cache's keys and values, the column being
written, the decoding mask), so one decoding step can be recorded once as a CUDA graph and
replayed (`trainables.generation`). It speaks the part of Hugging Face's cache protocol that a
decoder's attention layers call (`update`, `get_seq_length`), in the releases that name the
argument `cache` and in those that name it `past_key_values`.

Columns: each row holds its own sequence. Prompts admitted together are left-padded to width W and
occupy columns [0, W) of their rows; the row's generated token t (t ≥ 1) is written at column
W + t - 1 (`columns[row]`), so rows admitted at different times decode side by side. The masks are
additive (0 visible, dtype min hidden), which both the eager and the SDPA attention of
transformers accept as a prepared 4-D mask.
"""

from __future__ import annotations

from typing import Any

import torch

#: Cache lengths are rounded up to a multiple of this (aligned mask rows for the SDPA kernels).
ALIGN = 8


def cache_len(width: int, max_new_tokens: int) -> int:
    """Columns a batch of prompts `width` wide needs to decode `max_new_tokens`, aligned."""
    need = width + max_new_tokens
    return -(-need // ALIGN) * ALIGN


def attention_heads(config: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dimension) of a decoder with this config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


class StaticKV:
    """Keys and values of every layer for B sequences × L columns, written in place."""

    def __init__(self, config: Any, batch: int, length: int, dtype: torch.dtype, device: torch.device) -> None:
        _, kv_heads, head_dim = attention_heads(config)
        shape = (batch, kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        #: The column each row's next one-token (decoding) update writes: advanced in place.
        self.columns = torch.zeros(batch, dtype=torch.long, device=device)
        #: During a prefill: the rows it fills (its i-th sequence goes to row fill_rows[i]).
        self.fill_rows: torch.Tensor | None = None
        #: During a prefill of prompts that share a prefix: its keys and values, one [1, KV, P, D]
        #: tensor a layer (`trainables.shared_prefix.PrefixKV`); the prefill's tokens follow it.
        self.prefix: Any = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values; return what the new tokens attend over.

        A prefill (`fill_rows` set) writes columns [0, T) of those rows and attends within its own
        T tokens (with `prefix`: columns [0, P + T), the prefix's P then its own T, and attends over
        both); a one-token update writes each row's `columns[row]` and attends over all L columns."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.fill_rows is not None:
            if self.prefix is not None:
                n = key_states.shape[0]
                pk, pv = self.prefix.keys[layer_idx], self.prefix.values[layer_idx]
                key_states = torch.cat([pk.expand(n, -1, -1, -1), key_states], dim=2)
                value_states = torch.cat([pv.expand(n, -1, -1, -1), value_states], dim=2)
            width = key_states.shape[2]
            keys[:, :, :width].index_copy_(0, self.fill_rows, key_states)
            values[:, :, :width].index_copy_(0, self.fill_rows, value_states)
            return key_states, value_states
        at = self.columns.view(-1, 1, 1, 1).expand(key_states.shape)
        keys.scatter_(2, at, key_states)
        values.scatter_(2, at, value_states)
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """What transformers asks to place new positions: 0, as decoding passes its positions and
        4-D masks prepared (rows hold sequences of different lengths)."""
        return 0

    def __len__(self) -> int:
        return len(self.keys)


def prefill_mask(padding: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, W, L] additive mask of the prefill: a query sees the real keys at or before it.

    `padding` [B, W] is True at the left padding. A padding query sees only itself, so no row is
    fully hidden (which would make NaNs that flow into the cache); no real query sees padding."""
    b, w = padding.shape
    q = torch.arange(w, device=padding.device)[:, None]
    k = torch.arange(length, device=padding.device)[None, :]
    visible = (k <= q)[None] & ~_pad_columns(padding, length)[:, None, :]
    visible |= (k == q)[None]
    return _additive(visible[:, None], dtype)


def decode_mask(padding: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, L] additive mask of the first decoding step's keys: the prompts' real columns.

    Each step then un-hides the column each row writes (`scatter_` at `StaticKV.columns`)."""
    w = padding.shape[1]
    visible = ~_pad_columns(padding, length)
    visible[:, w:] = False
    return _additive(visible[:, None, None], dtype)


def _pad_columns(padding: torch.Tensor, length: int) -> torch.Tensor:
    """[B, L] True at padding columns (the columns beyond the prompts are not padding)."""
    out = torch.zeros(padding.shape[0], length, dtype=torch.bool, device=padding.device)
    out[:, :padding.shape[1]] = padding
    return out


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where visible, the dtype's most negative value elsewhere."""
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)

"""Prompt prefixes shared by many evaluation prompts, prefilled once: their keys and values are
computed in one forward and copied into every row that starts with them.

Why: a task's zero-shot prompts all begin with its instruction. On the study's data (XTREME sample,
the 128,256-token BPE) the common prefix is 25–62 tokens a task, 37% of every prompt token an
evaluation prefills. Keys are stored after their rotary rotation at their own positions, so a
prefix's keys and values at positions 0..P-1 are the same in every prompt that starts with it;
the prompt's remaining tokens are then prefilled at positions P.. and attend over the prefix's
columns and their own (`trainables.generation._Decoder.admit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from trainables.kv_cache import StaticKV, prefill_mask

#: A prefix is shared only if at least this many tokens long (shorter ones save less than the
#: extra prefill forward that splitting an admission by prefix costs).
MIN_SHARED_PREFIX = 8


@dataclass(frozen=True)
class PrefixGroups:
    """Which prompts share a prefix: `group[i]` is prompt i's group (-1: none) and `lengths[g]`
    the number of leading tokens every prompt of group g has in common."""

    group: list[int]
    lengths: list[int]

    def prefix_len(self, i: int) -> int:
        """Leading tokens of prompt i that come from its group's shared prefix (0 without one)."""
        return self.lengths[self.group[i]] if self.group[i] >= 0 else 0


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefixes(prompts: Sequence[Sequence[int]], min_len: int = MIN_SHARED_PREFIX) -> PrefixGroups:
    """Groups of ≥ 2 prompts that share at least `min_len` leading tokens, each with the longest
    prefix all its prompts share (always leaving each prompt at least one token of its own)."""
    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    group = [-1] * len(prompts)
    lengths: list[int] = []
    run: list[int] = []
    shared = 0

    def close() -> None:
        if len(run) >= 2:
            n = min(shared, min(len(prompts[i]) for i in run) - 1)
            if n >= min_len:
                for i in run:
                    group[i] = len(lengths)
                lengths.append(n)

    for i in order:  # in sorted order, a run's common prefix is the least of its neighbours' ones
        common = _common(prompts[run[-1]], prompts[i]) if run else 0
        if run and common >= min_len:
            run.append(i)
            shared = min(shared, common)
        else:
            close()
            run, shared = [i], len(prompts[i])
    close()
    return PrefixGroups(group, lengths)


@dataclass(frozen=True)
class PrefixKV:
    """A prefix's token ids and every layer's keys and values [1, KV heads, P, head dim]."""

    ids: tuple[int, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def prefix_kv(lm: nn.Module, ids: Sequence[int], cache_kwarg: str, device: torch.device) -> PrefixKV:
    """The keys and values of `ids` at positions 0..P-1, from one forward of the decoder."""
    dtype = next(lm.parameters()).dtype
    n = len(ids)
    kv = StaticKV(lm.config, 1, n, dtype, device)
    kv.fill_rows = torch.zeros(1, dtype=torch.long, device=device)
    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    mask = prefill_mask(torch.zeros(1, n, dtype=torch.bool, device=device), n, dtype)
    pos = torch.arange(n, device=device)[None]
    lm(input_ids=x, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **{cache_kwarg: kv})
    return PrefixKV(tuple(ids), kv.keys, kv.values)


def prefixes_kv(lm: nn.Module, prompts: Sequence[Sequence[int]], groups: PrefixGroups, cache_kwarg: str,
                device: torch.device) -> list[PrefixKV]:
    """Each group's shared prefix, prefilled (in group order)."""
    firsts: dict[int, int] = {}
    for i, g in enumerate(groups.group):
        firsts.setdefault(g, i)
    return [prefix_kv(lm, prompts[firsts[g]][:n], cache_kwarg, device) for g, n in enumerate(groups.lengths)]

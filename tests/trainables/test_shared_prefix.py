"""Shared prompt prefixes prefilled once: which prompts share one, that a row filled from a prefix
holds the keys and values a whole-prompt prefill writes, and that the texts do not change."""

from __future__ import annotations

import pytest
import torch

from tests.trainables.test_generation import prompts_of
from trainables import generation
from trainables.config import ModelConfig
from trainables.generation import greedy_generate
from trainables.models import load_model
from trainables.shared_prefix import MIN_SHARED_PREFIX, prefix_kv, prefixes_kv, shared_prefixes

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    torch.manual_seed(0)
    return load_model(ModelConfig(name="tiny"), CPU, trainable=False)


def longest_common(seqs):
    """The longest prefix every sequence starts with, by brute force."""
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    return n


def test_prompts_group_by_their_common_prefix():
    a = list(range(100, 120))                       # 20 tokens
    b = list(range(200, 212))                       # 12 tokens
    prompts = [a + [1, 2], b + [5], a + [3], [7] * 30, b + [6, 6], a + [1, 4], b]
    g = shared_prefixes(prompts, min_len=8)
    # a-prompts share 20 tokens, b-prompts 12 but one is b itself: each keeps one token of its own.
    assert g.group[0] == g.group[2] == g.group[5] != g.group[1] == g.group[4] == g.group[6]
    assert g.lengths[g.group[0]] == 20 and g.lengths[g.group[1]] == 11
    assert g.group[3] == -1 and g.prefix_len(3) == 0  # alone: nothing to share
    for i, p in enumerate(prompts):
        members = [q for j, q in enumerate(prompts) if g.group[j] == g.group[i] >= 0]
        if members:
            assert g.prefix_len(i) == min(longest_common(members), min(map(len, members)) - 1)


def test_short_or_single_prefixes_are_not_shared():
    assert shared_prefixes([[1] * 5 + [2], [1] * 5 + [3]], min_len=8).lengths == []
    assert shared_prefixes([list(range(30))], min_len=8).group == [-1]
    assert shared_prefixes([], min_len=8).lengths == []
    dup = shared_prefixes([list(range(20)), list(range(20))], min_len=8)
    assert dup.lengths == [19]  # identical prompts: the last token is each one's own
    assert MIN_SHARED_PREFIX >= 1


def test_real_task_prompts_share_their_instruction(tiny_tokenizer):
    """The tiny default's prompts of one task start with the task's instruction; other tasks' don't."""
    prompts = prompts_of(tiny_tokenizer, ["nli", "ner", "qa"])
    g = shared_prefixes(prompts)
    assert len(g.lengths) == 3 and all(grp >= 0 for grp in g.group)
    for grp, n in enumerate(g.lengths):
        members = [p for p, q in zip(prompts, g.group) if q == grp]
        assert n == longest_common(members) and n >= MIN_SHARED_PREFIX


def test_a_row_filled_from_a_prefix_holds_the_whole_prefills_keys_and_values(tiny_model, tiny_tokenizer):
    """The cache after admitting prompts from their shared prefix equals, at every real column,
    the cache after prefilling the whole prompts; the first token is the same."""
    prompts = [p for p in prompts_of(tiny_tokenizer, ["ner"], n=4)][:5]
    g = shared_prefixes(prompts)
    assert g.lengths and all(x == 0 for x in g.group)
    lm = generation.causal_lm(tiny_model)
    key = generation._cache_kwarg(type(lm).forward)
    prefix = prefix_kv(lm, prompts[0][:g.lengths[0]], key, CPU)
    tables = generation.end_tables(tiny_tokenizer, tiny_model, ())
    width = max(map(len, prompts))
    caches = []
    for pre in (None, prefix):
        dec = generation._Decoder(lm, len(prompts), generation.cache_len(width, 4), 4, 0, tables, CPU)
        dec.admit(list(range(len(prompts))), prompts, [4] * len(prompts), pre)
        caches.append(dec)
    plain, shared = caches
    assert torch.equal(plain.out[:, 0], shared.out[:, 0]) and torch.equal(plain.pos, shared.pos)
    n = len(prefix)
    for r, p in enumerate(prompts):
        # Plain: the prompt at [W - len, W). Shared: the prefix at [0, n), its own tokens end at W.
        own = len(p) - n
        for layer in range(len(plain.kv.keys)):
            for cache in ("keys", "values"):
                a = getattr(plain.kv, cache)[layer][r, :, width - len(p):width]
                b = getattr(shared.kv, cache)[layer][r]
                b = torch.cat([b[:, :n], b[:, width - own:width]], dim=1)
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # The decoding masks see exactly the real columns: as many as each prompt's tokens.
    assert ((shared.mask[:, 0, 0] == 0).sum(-1)).tolist() == [len(p) for p in prompts]


def test_shared_prefixes_give_the_same_text_with_refills_budgets_and_streams(tiny_model, tiny_tokenizer):
    """Every task, per-prompt budgets, 3 rows (so rows are refilled from several prefixes): the texts
    equal those without sharing; fewer tokens are prefilled and the rest came from the prefixes."""
    prompts = prompts_of(tiny_tokenizer, ["nli", "pa", "qa", "ner", "pos"], n=3)
    budgets = [1 + (5 * i) % 9 for i in range(len(prompts))]
    for rows in (64, 3):
        off, s_off = greedy_generate(tiny_model, tiny_tokenizer, prompts, budgets, CPU, 2**30, rows,
                                     share_prefixes=False)
        on, s_on = greedy_generate(tiny_model, tiny_tokenizer, prompts, budgets, CPU, 2**30, rows)
        assert on == off
        g = shared_prefixes(prompts)
        assert s_on.prefix_tokens == sum(g.prefix_len(i) for i in range(len(prompts))) > 0
        assert s_on.prompt_tokens == s_off.prompt_tokens == sum(map(len, prompts))
        assert s_on.prefill_tokens + s_on.prefix_tokens >= s_on.prompt_tokens
        assert s_on.prefill_tokens < s_off.prefill_tokens and s_off.prefix_tokens == 0


def test_each_prefill_forward_has_one_prefix(tiny_model, tiny_tokenizer):
    prompts = prompts_of(tiny_tokenizer, ["nli", "ner"], n=3) + [[5, 6, 7]]
    g = shared_prefixes(prompts)
    lm = generation.causal_lm(tiny_model)
    kvs = prefixes_kv(lm, prompts, g, generation._cache_kwarg(type(lm).forward), CPU)
    per_prompt = [kvs[x] if x >= 0 else None for x in g.group]
    pairs = [(i, i) for i in range(len(prompts))]
    forwards = generation._prefills(pairs, prompts, per_prompt)
    assert sorted(p for _, part in forwards for p in part) == pairs
    for prefix, part in forwards:
        assert all(per_prompt[i] is prefix for _, i in part)
        shared = len(prefix) if prefix is not None else 0
        lengths = [len(prompts[i]) - shared for _, i in part]
        assert min(lengths) >= generation.PREFILL_LENGTH_RATIO * max(lengths)
        if prefix is not None:
            assert all(tuple(prompts[i][:shared]) == prefix.ids for _, i in part)

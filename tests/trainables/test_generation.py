"""Greedy decoding for evaluation: the same text as Hugging Face's `generate` when nothing stops it
early, batches that end when every sequence has ended (EOS, or a stop string after content),
and batch sizes that follow the memory budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.config import ModelConfig, TrialConfig
from trainables.evaluate import eval_items
from trainables import generation
from trainables.generation import batch_size_for, cut_at_stop, greedy_generate, kv_bytes_per_token
from trainables.kv_cache import cache_len
from trainables.models import load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    torch.manual_seed(0)
    return load_model(ModelConfig(name="tiny"), CPU, trainable=False)


def prompts_of(tokenizer, tasks, n=3):
    cfg = TrialConfig.model_validate({"data": {"tasks": tasks, "eval_langs": ["en", "hi", "zh"],
                                               "synthetic_sizes": {"train": 20, "dev": 20, "test": 20}}})
    return [it.prompt_ids for it in eval_items(cfg, tokenizer, "test", n, fewshot=False)]


def length_groups(lengths: list[int], ratio: float = 0.5) -> int:
    """Length groups: a new one whenever a prompt is under `ratio` of the group's longest."""
    groups, longest = 0, None
    for n in sorted(lengths, reverse=True):
        if longest is None or n < ratio * longest:
            groups, longest = groups + 1, n
    return groups


def prefills(lengths: list[int]) -> int:
    """Prefill forwards of one admission of all these prompts: runs of similar lengths."""
    return length_groups(lengths, generation.PREFILL_LENGTH_RATIO)


def test_an_admission_prefills_runs_of_similar_lengths():
    """Admitted prompts are prefilled longest first, none under PREFILL_LENGTH_RATIO of its
    prefill's longest; every (row, prompt) pair exactly once."""
    prompts = [[0] * n for n in (10, 100, 80, 76, 74, 40, 31, 30)]
    pairs = [(7 - i, i) for i in range(len(prompts))]
    parts = [part for prefix, part in generation._prefills(pairs, prompts)]
    assert [[len(prompts[i]) for _, i in part] for part in parts] == [[100, 80, 76], [74], [40, 31, 30], [10]]
    assert sorted(p for part in parts for p in part) == sorted(pairs)


def rows_for(n):
    """A rows-for-the-budget rule of `n` cache cells: rows × (longest + budget) ≤ n."""
    return lambda longest, most_new: max(1, n // (longest + most_new))


def test_streams_join_groups_when_that_costs_fewer_steps():
    """plan_streams: every prompt once; a group joins the stream before it unless the wider cache
    would leave it too few rows; within a stream, largest budget first, then longest."""
    lengths = [1000] + [100] * 300 + [40, 30]
    budgets = [10] * 301 + [3, 50]
    plan = generation.plan_streams(lengths, budgets, rows_for(10**9))  # roomy: one stream
    assert [len(s) for s, _ in plan] == [len(lengths)] and plan[0][1] == len(lengths)
    assert sorted(plan[0][0]) == list(range(len(lengths)))
    order = [(budgets[i], lengths[i]) for i in plan[0][0]]
    assert order == sorted(order, key=lambda bl: (-bl[0], -bl[1]))
    # 20,000 cells. The 300 prompts of 100 tokens get 181 rows alone; joined to the 1000-token
    # prompt, 19: 3,000 worst-case tokens / 19 rows = 158 steps > 3,000 / 181 + 10 = 27 → apart.
    # The last group (2 prompts, 53 tokens) joins them: 53 / 133 rows ≤ 53 / 2 + 50.
    plan = generation.plan_streams(lengths, budgets, rows_for(20_000))
    assert [sorted(s) for s, _ in plan] == [[0], list(range(1, 303))]
    assert [r for _, r in plan] == [1, 20_000 // (100 + 50)]
    # With as many rows either way, a group always joins: it saves its tail.
    assert len(generation.plan_streams([100, 51, 50, 26], [5] * 4, rows_for(1))) == 1


def test_text_equals_hugging_face_generate_one_prompt_at_a_time(tiny_model, tiny_tokenizer):
    prompts = prompts_of(tiny_tokenizer, ["nli", "qa", "ner"])
    ours, stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, 12, CPU, 2**30, 64, share_prefixes=False)
    shared, _ = greedy_generate(tiny_model, tiny_tokenizer, prompts, 12, CPU, 2**30, 64)  # trainables/shared_prefix.py
    reference = []
    for p in prompts:  # the old path: model.generate, no padding, decoded without special tokens
        ids = torch.tensor([p])
        gen = tiny_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                  do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
        reference.append(tiny_tokenizer.decode(gen[0, len(p):], skip_special_tokens=True))
    assert ours == reference == shared
    # Roomy: one stream, one admission, in prefills of similar lengths.
    assert stats.sequences == len(prompts) and stats.batches == prefills([len(p) for p in prompts])
    assert stats.prompt_tokens == sum(map(len, prompts)) <= stats.prefill_tokens
    # Every decoding step (all but the first token, which the prefill gives) reads every row's cache.
    width = cache_len(max(map(len, prompts)), 12)
    assert stats.kv_reads == (stats.decode_steps - 1) * len(prompts) * width


def test_per_prompt_budgets_give_each_prompt_its_own_decoding(tiny_model, tiny_tokenizer):
    """One budget per prompt: each text is what that prompt decodes alone with its budget."""
    prompts = prompts_of(tiny_tokenizer, ["nli", "qa", "ner"])
    budgets = [1 + (3 * i) % 11 for i in range(len(prompts))]
    together, stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, budgets, CPU, 2**30, 64,
                                      share_prefixes=False)
    alone = [greedy_generate(tiny_model, tiny_tokenizer, [p], b, CPU, 2**30, 64)[0][0] for p, b in zip(prompts, budgets)]
    assert together == alone
    assert stats.generated_tokens <= sum(budgets) and stats.batches == prefills([len(p) for p in prompts])
    # One stream runs to its longest budget, seen at the next check (every SYNC_EVERY steps).
    assert stats.decode_steps <= max(budgets) + generation.SYNC_EVERY - 1


def test_prefill_and_decoding_seconds_split_the_generation_time(tiny_model, tiny_tokenizer):
    """The call's prefill and decoding seconds are both spent and together within its wall time."""
    import time

    prompts = prompts_of(tiny_tokenizer, ["nli", "qa", "ner"])
    t0 = time.perf_counter()
    _, stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, 12, CPU, 2**30, 64)
    wall = time.perf_counter() - t0
    assert stats.prefill_s > 0 and stats.decode_s > 0
    assert stats.prefill_s + stats.decode_s <= wall


def test_span_clock_adds_spans_of_one_name():
    import time

    clock = generation.SpanClock(CPU)
    for _ in range(2):
        with clock.span("a"):
            time.sleep(0.01)
    assert 0.02 <= clock.seconds("a") < 0.5 and clock.seconds("b") == 0.0


@pytest.mark.parametrize("budgets, why", [([3, 3], "one per prompt"), ([3, 0, 3], "≥ 1"), (0, "≥ 1")])
def test_bad_budgets_are_one_clear_error(tiny_model, tiny_tokenizer, budgets, why):
    prompts = prompts_of(tiny_tokenizer, ["nli"], n=1)[:3]
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(tiny_model, tiny_tokenizer, prompts, budgets, CPU, 2**30, 64)


def test_stop_strings_cut_the_same_text(tiny_model, tiny_tokenizer):
    prompts = prompts_of(tiny_tokenizer, ["pos", "qa"])
    free, _ = greedy_generate(tiny_model, tiny_tokenizer, prompts, 16, CPU, 2**30, 64)
    stops = sorted({t.strip()[:1] for t in free if t.strip()})[:3]  # characters the model does emit
    cut, _ = greedy_generate(tiny_model, tiny_tokenizer, prompts, 16, CPU, 2**30, 64, stops)
    assert cut == [cut_at_stop(t, stops) for t in free]


def test_cut_at_stop_ignores_leading_whitespace():
    assert cut_at_stop("\n\n B-PER O\nSentence: x", ["\n"]) == "\n\n B-PER O"
    assert cut_at_stop("yes", ["\n"]) == "yes"
    assert cut_at_stop("a|b\nc", ["\n", "|"]) == "a"


class ScriptedLM(nn.Module):
    """A stand-in causal LM whose greedy token at step t of row r is script[r][t]."""

    def __init__(self, script: list[list[int]], vocab: int, tokenizer) -> None:
        super().__init__()
        self.script, self.calls = script, 0
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = type("Cfg", (), dict(vocab_size=vocab, num_hidden_layers=1, num_attention_heads=1,
                                           num_key_value_heads=1, hidden_size=4, intermediate_size=4))()
        self.generation_config = type("Gen", (), dict(eos_token_id=tokenizer.eos_token_id))()

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep, cache=None):
        t, self.calls = self.calls, self.calls + 1
        logits = torch.zeros(input_ids.shape[0], 1, self.config.vocab_size)
        for r, row in enumerate(self.script):
            logits[r, 0, row[min(t, len(row) - 1)]] = 1.0
        return type("Out", (), {"logits": logits})()


def test_batch_stops_when_every_sequence_has_ended(tiny_tokenizer):
    tok = tiny_tokenizer
    vocab = len(tok)
    texts = tok.batch_decode([[i] for i in range(vocab)])
    newline = next(i for i, t in enumerate(texts) if t == "\n")
    word = next(i for i, t in enumerate(texts) if t.strip().isalpha() and len(t.strip()) > 2)
    eos = tok.eos_token_id
    script = [
        [newline, word, word, newline, word],  # a leading newline does not end it; the one after content does
        [word, eos, word],                      # EOS ends it
        [word, word, word, word, word, eos],    # the longest: the batch runs until it ends
    ]
    lm = ScriptedLM(script, vocab, tok)
    out, stats = greedy_generate(lm, tok, [[word]] * 3, 40, CPU, 2**30, 8, ["\n"])
    w = texts[word]
    assert out[0] == cut_at_stop("\n" + w + w + "\n", ["\n"]) == "\n" + w + w
    assert out[1] == w
    assert out[2] == w * 5
    assert stats.generated_tokens == 4 + 2 + 6
    # Ended at step 6, checked every SYNC_EVERY=4 steps: 8 forward calls, not 40.
    assert lm.calls == 8 and stats.decode_steps == 8


def test_batch_size_follows_the_memory_budget(tiny_model, tiny_tokenizer):
    config = tiny_model.config
    per_token = kv_bytes_per_token(config, torch.float32)
    heads = config.num_key_value_heads or config.num_attention_heads
    assert per_token == 2 * config.num_hidden_layers * heads * (config.hidden_size // config.num_attention_heads) * 4
    one = batch_size_for(config, torch.float32, 100, 20, 10**12, 10**9) and \
        batch_size_for(config, torch.float32, 100, 20, 10**6, 10**9)
    assert batch_size_for(config, torch.float32, 100, 20, 10**12, 64) == 64   # the cap
    assert one >= 1 and batch_size_for(config, torch.float32, 100, 20, 1, 64) == 1  # never 0
    small = batch_size_for(config, torch.float32, 100, 20, 4 * 10**6, 10**9)
    assert small == batch_size_for(config, torch.float32, 100, 20, 8 * 10**6, 10**9) // 2 or small >= 1
    prompts = prompts_of(tiny_tokenizer, ["qa"], n=4)
    budget = 3 * (per_token * (max(map(len, prompts)) + 8) + 10**4)
    roomy, a = greedy_generate(tiny_model, tiny_tokenizer, prompts, 8, CPU, 2**30, 64, share_prefixes=False)
    tight, b = greedy_generate(tiny_model, tiny_tokenizer, prompts, 8, CPU, budget, 64, share_prefixes=False)
    assert roomy == tight and a.batches == prefills([len(p) for p in prompts]) < b.batches


def test_streams_follow_the_memory_budget_and_give_the_same_text(tiny_model, tiny_tokenizer, monkeypatch):
    """Roomy memory: every length group in one stream; tight: the long prompts' wide cache would
    leave the short ones too few rows, so they stream apart. The texts are the same."""
    prompts = prompts_of(tiny_tokenizer, ["qa", "nli"], n=4)
    assert max(map(len, prompts)) > 2 * min(map(len, prompts)) and length_groups([len(p) for p in prompts]) > 1
    widths: list[list[int]] = []
    real = generation._decode_stream

    def spy(lm, group, *args, **kwargs):
        widths.append([len(p) for p in group])
        return real(lm, group, *args, **kwargs)

    monkeypatch.setattr(generation, "_decode_stream", spy)
    one, one_stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, 6, CPU, 2**30, 64, share_prefixes=False)
    assert len(widths) == 1 and one_stats.batches == prefills([len(p) for p in prompts])
    widths.clear()
    per_token = kv_bytes_per_token(tiny_model.config, torch.float32)
    tight = per_token * (max(map(len, prompts)) + 8) * 4  # a few rows: the short prompts' 3 rows count
    plan = generation.plan_streams([len(p) for p in prompts], [6] * len(prompts), lambda n, new: batch_size_for(
        tiny_model.config, torch.float32, n, new, tight, 64))
    apart, stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, 6, CPU, tight, 64)
    assert len(widths) == len(plan) > 1 and apart == one
    assert [sorted(w) for w in widths] == [sorted(len(prompts[i]) for i in s) for s, _ in plan]
    assert sorted(w for ws in widths for w in ws) == sorted(map(len, prompts))


class SuccessorLM(nn.Module):
    """A stand-in causal LM whose greedy token follows its input token (id + 1); it checks that every
    row of a decoding step sees exactly its own tokens: position + 1 visible columns."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.config = type("Cfg", (), dict(vocab_size=vocab, num_hidden_layers=1, num_attention_heads=1,
                                           num_key_value_heads=1, hidden_size=4, intermediate_size=4))()
        self.inputs: list[list[int]] = []

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep, cache=None):
        if input_ids.shape[1] == 1:  # a decoding step of every row
            visible = (attention_mask[:, 0, 0] == 0).sum(-1)
            assert visible.tolist() == (position_ids[:, 0] + 1).tolist()
        self.inputs.append(input_ids[:, -1].tolist())
        logits = torch.zeros(input_ids.shape[0], 1, self.config.vocab_size)
        logits[torch.arange(input_ids.shape[0]), 0, (input_ids[:, -1] + 1) % self.config.vocab_size] = 1.0
        return type("Out", (), {"logits": logits})()


def test_ended_rows_take_the_next_prompt_while_the_others_decode():
    """Continuous batching: with 2 rows, a short answer's row is refilled while the long one goes on;
    every sequence's ids are its own (a refill disturbs no live row), each within its budget."""
    vocab = 100
    eos = torch.zeros(vocab, dtype=torch.bool)
    eos[[20, 40, 60, 80]] = True
    no = torch.zeros(vocab, dtype=torch.bool)
    lm = SuccessorLM(vocab)
    session = generation.DecodeSession(lm, 0, generation.EndTables(eos, no, no), CPU, graphs=False)
    stats = generation.GenerationStats()
    prompts, budgets = [[5, 1], [55], [75], [33], [90]], [30, 30, 30, 30, 3]
    ids = generation._decode_stream(lm, prompts, budgets, 2, session, stats)
    assert ids == [list(range(2, 21)), list(range(56, 61)), list(range(76, 81)), list(range(34, 41)), [91, 92, 93]]
    # Five one-row prefills: the first admission's two prompts differ in length (2 and 1 tokens).
    assert stats.batches == 5 and stats.prompt_tokens == stats.prefill_tokens == 6
    assert [step for step in lm.inputs if len(step) == 1] == [[1], [55], [75], [33], [90]]
    # Row 0 is fed its 18 first tokens, one a step, while the three others pass through row 1.
    assert [step[0] for step in lm.inputs if len(step) == 2][:18] == list(range(2, 20))
    # Checked every 4 steps: 24 forwards. Two rows as fixed batches, one after another: 20 + 8 + 4.
    assert stats.decode_steps == 24 < 20 + 8 + 4


def test_cache_masks_hide_padding_and_the_future():
    """Prefill: a real query sees real keys at or before it; padding sees itself only. Decoding: the
    prompts' real columns, nothing beyond them."""
    from trainables.kv_cache import cache_len, decode_mask, prefill_mask

    padding = torch.tensor([[True, True, False, False], [False, False, False, False]])
    length = cache_len(4, 3)
    assert length == 8 and cache_len(4, 4) == 8 and cache_len(4, 5) == 16
    pre = prefill_mask(padding, length, torch.float32)[:, 0] == 0  # [B, W, L] visible
    for b in range(2):
        for q in range(4):
            for k in range(length):
                real_q, real_k = not padding[b, q], k < 4 and not padding[b, k]
                expect = (k <= q and real_k) if real_q else k == q
                assert bool(pre[b, q, k]) == expect, (b, q, k)
    dec = decode_mask(padding, length, torch.float32)[:, 0, 0] == 0
    assert dec.tolist() == [[False, False, True, True] + [False] * 4, [True] * 4 + [False] * 4]


def test_batches_reuse_the_last_batchs_tensors_and_give_the_same_text(tiny_model, tiny_tokenizer, monkeypatch):
    """A stream that fits the previous stream's decoding tensors (fewer rows: idle rows; fewer
    columns: hidden ones; across tasks' calls in one session) decodes the same text as fresh ones."""
    prompts = prompts_of(tiny_tokenizer, ["qa", "ner"], n=4)
    fresh, a = greedy_generate(tiny_model, tiny_tokenizer, prompts, 10, CPU, 2**30, 5)
    session = generation.open_session(tiny_model, tiny_tokenizer, (), CPU, reuse=False)
    assert session.reuse is False
    monkeypatch.setattr(generation._Decoder, "fits", lambda self, *a: False)
    none_reused, b = greedy_generate(tiny_model, tiny_tokenizer, prompts, 10, CPU, 2**30, 5)
    monkeypatch.undo()
    assert fresh == none_reused and a.decoders == b.decoders == 1  # one stream through 5 rows
    assert a.batches == b.batches > 1
    # One session over two calls (two tasks' budgets): the second call reuses the first's tensors.
    session = generation.open_session(tiny_model, tiny_tokenizer, (), CPU)
    first, s1 = greedy_generate(tiny_model, tiny_tokenizer, prompts, 10, CPU, 2**30, 64, session=session)
    short = sorted(prompts, key=len)[-12:]  # they fit the first call's tensors (≤ 2× their rows and width)
    second, s2 = greedy_generate(tiny_model, tiny_tokenizer, short, 6, CPU, 2**30, 64, session=session)
    assert session.held_bytes() > 0
    session.close()
    assert session.held_bytes() == 0
    alone, _ = greedy_generate(tiny_model, tiny_tokenizer, short, 6, CPU, 2**30, 64)
    assert first == fresh and second == alone and s1.decoders == 1 and s2.decoders == 0


def test_reuse_is_bounded_to_twice_the_rows_and_columns():
    from trainables.generation import _Decoder, EndTables

    class Lm(nn.Module):
        config = type("C", (), {"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                                "hidden_size": 8})()

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

    no = torch.zeros(4, dtype=torch.bool)
    dec = _Decoder(Lm(), 40, 64, 16, 0, EndTables(no, no, no), CPU)
    assert dec.fits(40, 64, 16) and dec.fits(16, 32, 8) and dec.fits(20, 33, 1)
    assert not dec.fits(41, 64, 16) and not dec.fits(40, 65, 16) and not dec.fits(40, 64, 17)
    assert not dec.fits(15, 64, 16) and not dec.fits(40, 31, 16)  # too much idle work

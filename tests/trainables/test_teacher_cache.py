"""Teacher cache: its key, the round trip through disk, and its numbers against a direct forward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainables.config import DataConfig, ModelConfig, TeacherConfig, TrainConfig, TrialConfig
from trainables.data import training_pools, training_set
from trainables.models import load_model, load_tokenizer
from trainables.teacher.build import build_cache, cache_dir, cache_key
from trainables.teacher.cache import CacheError, CacheWriter, TeacherCache, TokenRows, fingerprint, is_complete


def _cfg(**over) -> TrialConfig:
    data = DataConfig(tasks=["nli", "ner"], max_train_per_task=6, synthetic_sizes={"train": 12, "dev": 4, "test": 4})
    cfg = TrialConfig(model=ModelConfig(name="tiny"), data=data, teacher=TeacherConfig(top_k=16, batch_size=4),
                      train=TrainConfig())
    return cfg.model_copy(update=over)


def test_key_changes_with_every_setting_that_changes_numbers(tiny_dir):
    base = _cfg()
    k0 = fingerprint(cache_key(base, "fewshot"))
    assert k0 == fingerprint(cache_key(_cfg(), "fewshot"))  # stable
    variants = [
        cache_key(base, "zeroshot"),
        cache_key(_cfg(teacher=TeacherConfig(top_k=8)), "fewshot"),
        cache_key(_cfg(data=DataConfig.model_validate({**base.data.model_dump(), "shots": {"nli": 2}})), "fewshot"),
        cache_key(_cfg(data=DataConfig.model_validate({**base.data.model_dump(), "seed": 7})), "fewshot"),
        cache_key(_cfg(train=TrainConfig(kd_alignment="legacy")), "fewshot"),
        cache_key(_cfg(model=ModelConfig(name="tiny", tiny={"init_seed": 3})), "fewshot"),
    ]
    assert len({fingerprint(k) for k in variants} | {k0}) == len(variants) + 1
    # The zero-shot key does not depend on shots.
    assert cache_key(base, "zeroshot")["shots"] == 0
    with pytest.raises(ValueError, match="checkpoint"):
        cache_key(base, "checkpoint")
    with pytest.raises(ValueError, match="teacher mode"):
        cache_key(base, "oracle")


def test_round_trip_matches_a_direct_forward(tmp_path, tiny_dir):
    cfg = _cfg()
    path = build_cache(cfg, tmp_path, "zeroshot")
    assert path == cache_dir(cfg, tmp_path, "zeroshot") and is_complete(path)
    cache = TeacherCache(path)
    tok = load_tokenizer(cfg.model)
    examples = training_set(cfg, tok, training_pools(cfg))
    assert len(cache) == len(examples)
    model = load_model(cfg.model, torch.device("cpu"), trainable=False)
    for ex in examples[:3] + examples[-3:]:
        ids = torch.tensor([ex.student.input_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        pos = list(range(ex.student.answer_start - 1, len(ex.student.input_ids) - 1))
        rows = cache.rows(*ex.key)
        assert rows.gold_id.tolist() == list(ex.student.answer_ids)
        expect_top = logp[pos].topk(16, -1)
        np.testing.assert_array_equal(np.sort(rows.topk_ids, 1), np.sort(expect_top.indices.numpy(), 1))
        # fp16 storage: half an ulp is ~5e-4 relative (the pre-trained default is confident: log-probs to -20)
        np.testing.assert_allclose(rows.topk_logprobs.astype(np.float64), expect_top.values.numpy(), atol=2e-3, rtol=1e-3)
        tail = np.log1p(-np.exp(expect_top.values.numpy()).sum(-1))
        np.testing.assert_allclose(rows.tail_logmass, tail, atol=1e-4)
        ent = -(logp[pos].exp() * logp[pos]).sum(-1).numpy()
        np.testing.assert_allclose(rows.entropy, ent, rtol=1e-4, atol=1e-5)  # fp32 on the builder; near-0 when confident
        gold = logp[pos].gather(-1, torch.tensor(ex.student.answer_ids)[:, None]).squeeze(-1).numpy()
        np.testing.assert_allclose(rows.gold_logprob, gold, atol=1e-4)
    # gather concatenates in the order asked.
    keys = [examples[1].key, examples[0].key]
    topk, diag = cache.gather(keys)
    n0, n1 = examples[1].student.answer_len, examples[0].student.answer_len
    assert topk.ids.shape == (n0 + n1, 16) and topk.ids.dtype == torch.long
    assert diag["gold_id"].tolist() == list(examples[1].student.answer_ids + examples[0].student.answer_ids)
    # A second build finds the complete cache and does nothing.
    mtime = (path / "manifest.json").stat().st_mtime_ns
    assert build_cache(cfg, tmp_path, "zeroshot") == path
    assert (path / "manifest.json").stat().st_mtime_ns == mtime


def test_fewshot_cache_differs_from_zeroshot_but_keeps_the_answers(tmp_path, tiny_dir):
    cfg = _cfg()
    few = TeacherCache(build_cache(cfg, tmp_path, "fewshot"))
    zero = TeacherCache(build_cache(cfg, tmp_path, "zeroshot"))
    keys = [k for k in zip(["nli"] * 3, [f"syn-nli-en-train-{i:06d}" for i in range(12)]) if k in zero][:3]
    assert keys
    tf, df = few.gather(keys)
    tz, dz = zero.gather(keys)
    assert torch.equal(df["gold_id"], dz["gold_id"])
    assert not torch.allclose(tf.logprobs, tz.logprobs)


def test_caches_built_in_one_process_load_the_teacher_once_and_equal_separate_builds(tmp_path, tiny_dir, monkeypatch):
    from trainables.teacher import build

    cfg = _cfg()
    apart = {m: TeacherCache(build_cache(cfg, tmp_path / "apart", m)) for m in ("fewshot", "zeroshot")}
    loads, pools = [], []
    real, real_pools = build.load_teacher, build.training_pools
    monkeypatch.setattr(build, "load_teacher", lambda *a: loads.append(a[2]) or real(*a))
    monkeypatch.setattr(build, "training_pools", lambda c: pools.append(1) or real_pools(c))
    together = build.build_caches(cfg, tmp_path / "together", ["fewshot", "zeroshot"])
    assert loads == [None]  # the base model, once for both modes
    assert pools == [1]  # and the training data read and tokenised once
    assert [p.name for p in together] == [cache_dir(cfg, tmp_path, m).name for m in ("fewshot", "zeroshot")]
    for mode, path in zip(("fewshot", "zeroshot"), together):
        manifest = json.loads((path / "manifest.json").read_text())
        # The same rows, byte for byte: every task file's checksum equals the separate build's.
        assert {t: m["sha256"] for t, m in manifest["tasks"].items()} == {
            t: m["sha256"] for t, m in apart[mode].manifest["tasks"].items()}
        stats = manifest["stats"]
        phases = [stats[k] for k in ("data_s", "encode_s", "forward_s", "write_s")]
        assert all(x >= 0 for x in phases) and sum(phases[1:]) <= stats["seconds"] + 1e-6
        assert (stats["load_s"] > 0) == (mode == "fewshot")  # the second build reused the loaded teacher


def _rows(n: int, k: int, seed: int) -> TokenRows:
    rng = np.random.default_rng(seed)
    return TokenRows(rng.integers(0, 100, (n, k)).astype(np.int32), rng.normal(size=(n, k)).astype(np.float16),
                     rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32),
                     rng.integers(0, 100, n).astype(np.int32), rng.normal(size=n).astype(np.float32),
                     rng.random(n).astype(np.float32))


def test_writer_reader_exact_and_errors(tmp_path):
    w = CacheWriter(tmp_path / "c", {"k": 1}, top_k=4)
    rows = [_rows(3, 4, 0), _rows(1, 4, 1), _rows(5, 4, 2)]
    w.write_task("pos", ["a", "b", "c"], rows)
    assert not is_complete(tmp_path / "c")  # no manifest yet: incomplete
    with pytest.raises(CacheError, match="no complete teacher cache"):
        TeacherCache(tmp_path / "c")
    w.finish()
    cache = TeacherCache(tmp_path / "c")
    for ex_id, r in zip("abc", rows):
        got = cache.rows("pos", ex_id)
        for name in ("topk_ids", "topk_logprobs", "tail_logmass", "logsumexp", "gold_id", "gold_logprob", "entropy"):
            np.testing.assert_array_equal(getattr(got, name), getattr(r, name))
    with pytest.raises(CacheError, match="not in the teacher cache"):
        cache.rows("pos", "zzz")
    with pytest.raises(ValueError, match="duplicate"):
        w.write_task("nli", ["a", "a"], rows[:2])
    # Corruption is caught by the checksum.
    f = tmp_path / "c" / "pos.arrow"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="checksum"):
        TeacherCache(tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["tasks"]["pos"]["offsets"] == [0, 3, 4, 9]


def test_length_batches_hold_the_example_and_token_limits():
    from trainables.teacher.build import length_batches

    lengths = [50, 10, 30, 10, 200, 20, 40]
    batches = length_batches(lengths, batch_size=3, batch_tokens=90)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each example once
    # Shortest first; a batch's padded width is its longest, and width × size stays in the budget,
    # except an example longer than the budget, which gets a batch of its own.
    assert batches == [[1, 3, 5], [2, 6], [0], [4]]
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 90)
    assert length_batches(lengths, batch_size=2) == [[1, 3], [5, 2], [6, 0], [4]]  # no token limit
    assert length_batches([], 4, 100) == []


def test_a_tight_token_budget_gives_the_same_rows(tmp_path, tiny_dir):
    wide = TeacherCache(build_cache(_cfg(), tmp_path / "wide", "fewshot"))
    tight_cfg = _cfg(teacher=TeacherConfig(top_k=16, batch_size=4, batch_tokens=64))
    tight = TeacherCache(build_cache(tight_cfg, tmp_path / "tight", "fewshot"))
    keys = [ex.key for ex in training_set(_cfg(), load_tokenizer(_cfg().model), training_pools(_cfg()))]
    (tw, dw), (tt, dt) = wide.gather(keys), tight.gather(keys)
    assert torch.equal(dw["gold_id"], dt["gold_id"])
    torch.testing.assert_close(tw.logprobs.float(), tt.logprobs.float(), atol=2e-3, rtol=1e-3)
    stats = tight.manifest["stats"]
    assert set(stats["forward_by_task_s"]) == {"nli", "ner"} and stats["compiled"] is False  # CPU, auto: eager
    assert sum(stats["teacher_tokens_by_task"].values()) == stats["teacher_tokens"] > 0


@pytest.mark.parametrize("setting,device,tokens,compiled", [
    ("auto", "cuda", 10_000_000, True), ("auto", "cuda", 9_999_999, False), ("auto", "cpu", 10**9, False),
    ("on", "cpu", 1, True), ("off", "cuda", 10**9, False),
])
def test_the_teacher_compiles_only_for_builds_large_enough_to_repay_it(setting, device, tokens, compiled):
    from trainables.config import TEACHER_COMPILE_MIN_TOKENS, teacher_compile_enabled

    assert TEACHER_COMPILE_MIN_TOKENS == 10_000_000
    assert teacher_compile_enabled(TeacherConfig(compile=setting), device, tokens) is compiled


def test_answer_statistics_in_row_chunks_equal_one_pass(monkeypatch):
    from trainables.teacher import build

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 50, generator=g) * 3
    targets = torch.randint(0, 50, (7,), generator=g)
    whole = build.answer_stats(logits, targets, top_k=5, vocab_limit=40)
    monkeypatch.setattr(build, "STATS_ROWS", 3)  # chunks of 3, 3, 1 rows
    chunked = build.answer_stats(logits, targets, top_k=5, vocab_limit=40)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)
    # Against an independent computation in float64.
    logp = torch.log_softmax(logits.double(), -1)
    top = logp[:, :40].topk(5, -1)
    assert torch.equal(chunked[0].long(), top.indices)
    torch.testing.assert_close(chunked[2].double(), torch.logsumexp(logp.scatter(-1, top.indices, float("-inf")), -1),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked[6].double(), -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked[5].double(), logp.gather(-1, targets[:, None])[:, 0], atol=1e-5, rtol=1e-5)
    empty = build.answer_stats(logits[:0], targets[:0], top_k=5)
    assert [t.shape[0] for t in empty] == [0] * 7

"""A checkpoint teacher: a padded output layer works (top-K over the student's ids, extra rows'
mass in the tail), another tokenizer is refused before the build, cached ids are checked against
the student's vocabulary, and the cache key follows the checkpoint's files and the dtype."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from trainables.config import DataConfig, ModelConfig, TeacherConfig, TrainConfig, TrialConfig
from trainables.data import teacher_encoding, training_pools, training_set
from trainables.models import load_model, load_tokenizer
from trainables.teacher import build
from trainables.teacher.build import build_cache, cache_dir, cache_key
from trainables.teacher.cache import CacheError, CacheWriter, TeacherCache, TokenRows, fingerprint

PAD_ROWS = 8


def _cfg(checkpoint: str, **model) -> TrialConfig:
    data = DataConfig(tasks=["nli"], max_train_per_task=4, synthetic_sizes={"train": 4, "dev": 2, "test": 2})
    return TrialConfig(model=ModelConfig(name="tiny", **model), data=data, train=TrainConfig(),
                       teacher=TeacherConfig(top_k=16, batch_size=4, checkpoint=checkpoint))


@pytest.fixture(scope="module")
def padded_teacher(tmp_path_factory, tiny_dir):
    """The tiny model with PAD_ROWS extra output rows that take most of the probability mass."""
    path = tmp_path_factory.mktemp("padded")
    model = load_model(ModelConfig(name="tiny"), torch.device("cpu"), trainable=False)
    rows = model.config.vocab_size
    model.resize_token_embeddings(rows + PAD_ROWS)
    with torch.no_grad():
        model.get_output_embeddings().weight[rows:] = 0.0
        model.get_output_embeddings().bias = None
        # Give the extra rows large logits: hidden · w = |hidden|² > the real rows' logits.
        model.get_output_embeddings().weight[rows:] = model.get_output_embeddings().weight[:rows].abs().max() * 50
    model.save_pretrained(path)
    load_tokenizer(ModelConfig(name="tiny")).save_pretrained(path)
    return str(path), rows


def test_padded_teacher_vocabulary_keeps_top_k_in_the_student_ids(tmp_path, padded_teacher):
    path, rows = padded_teacher
    cfg = _cfg(path)
    cache = TeacherCache(build_cache(cfg, tmp_path, "checkpoint"), vocab_size=rows)
    assert cache.manifest["vocab_rows"] == rows
    tok = load_tokenizer(cfg.model)
    pools = training_pools(cfg)
    teacher = load_model(cfg.model, torch.device("cpu"), trainable=False, path=path)
    assert teacher.config.vocab_size == rows + PAD_ROWS
    heavy: list[bool] = []
    for ex in training_set(cfg, tok, pools):
        got = cache.rows(*ex.key)
        assert got.topk_ids.max() < rows  # ids the student has
        enc = teacher_encoding(cfg, tok, ex, pools["nli"], shots=False)
        logp = torch.log_softmax(teacher(input_ids=torch.tensor([enc.input_ids])).logits[0].double(), -1)
        pos = list(range(enc.answer_start - 1, len(enc.input_ids) - 1))
        extra_mass = logp[pos, rows:].exp().sum(-1).numpy()
        heavy.extend(extra_mass > 0.5)
        # Top-K over the student's ids; everything else, extra rows included, is the tail.
        np.testing.assert_allclose(np.sort(got.topk_logprobs.astype(np.float64), 1),
                                   np.sort(logp[pos, :rows].topk(16, -1).values.numpy(), 1), rtol=1e-3, atol=2e-3)
        total = np.exp(got.topk_logprobs.astype(np.float64)).sum(-1) + np.exp(got.tail_logmass.astype(np.float64))
        np.testing.assert_allclose(total, 1.0, atol=2e-3)
        assert (np.exp(got.tail_logmass) >= extra_mass - 1e-3).all()
    assert sum(heavy) >= 2  # the padded rows take most of the mass at some positions: the fold is visible


def test_teacher_with_another_tokenizer_is_refused_before_the_build(tmp_path, padded_teacher, monkeypatch):
    path, _ = padded_teacher
    other = tmp_path / "other"  # the same weights, saved with another tokenizer
    other.mkdir()
    for f in os.listdir(path):
        if not f.startswith("tokenizer") and f != "special_tokens_map.json":
            os.symlink(os.path.join(path, f), other / f)
    tok = copy.deepcopy(load_tokenizer(ModelConfig(name="tiny")))
    tok.add_tokens(["<extra-token>"])
    tok.save_pretrained(other)

    def no_data(*a, **k):
        raise AssertionError("data read before the tokenizer check")

    monkeypatch.setattr(build, "training_pools", no_data)
    cfg = _cfg(str(other))
    with pytest.raises(ValueError) as err:
        build_cache(cfg, tmp_path / "cache", "checkpoint")
    msg = str(err.value)
    assert "\n" not in msg and "different tokenizer" in msg and "tokens vs the student's" in msg
    assert not cache_dir(cfg, tmp_path / "cache", "checkpoint").exists()


def test_cached_ids_outside_the_student_vocabulary_are_refused_on_open(tmp_path):
    n, k = 3, 4
    rows = TokenRows(np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 120]], np.int32), np.zeros((n, k), np.float16),
                     np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int32),
                     np.zeros(n, np.float32), np.zeros(n, np.float32))
    w = CacheWriter(tmp_path / "c", {"k": 1}, top_k=k)
    w.write_task("nli", ["a"], [rows])
    w.finish()
    TeacherCache(tmp_path / "c", vocab_size=121)
    with pytest.raises(CacheError, match="token id 120, outside the student's vocabulary of 120"):
        TeacherCache(tmp_path / "c", vocab_size=120)


def test_key_follows_dtype_and_the_checkpoint_files(tmp_path, padded_teacher):
    path, _ = padded_teacher
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in os.listdir(path):
        (ckpt / f).write_bytes(open(os.path.join(path, f), "rb").read())
    cfg = _cfg(str(ckpt))
    k0 = fingerprint(cache_key(cfg, "checkpoint"))
    assert k0 == fingerprint(cache_key(_cfg(str(ckpt)), "checkpoint"))
    assert fingerprint(cache_key(_cfg(str(ckpt), dtype="bfloat16"), "checkpoint")) != k0
    assert fingerprint(cache_key(_cfg(str(ckpt), dtype="bfloat16"), "fewshot")) != \
        fingerprint(cache_key(_cfg(str(ckpt)), "fewshot"))
    # Same path, retrained weights: another key.
    weights = next(ckpt.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    k1 = fingerprint(cache_key(cfg, "checkpoint"))
    assert k1 != k0
    # Same weights, another config: another key.
    (ckpt / "config.json").write_text((ckpt / "config.json").read_text().replace('"rms_norm_eps"', '"rms_norm_eps" '))
    assert fingerprint(cache_key(cfg, "checkpoint")) != k1

"""The shipped tiny default learns in context: shown k demonstrations it answers far better than
zero-shot (the product's own evaluation, conditions `base` and `fewshot`), in every language."""

from __future__ import annotations

import random

import pytest
import torch

from trainables.config import EvalConfig, ModelConfig, TinyModelConfig, TrialConfig
from trainables.models import ensure_tiny_model, load_model, load_tokenizer, tiny_model_dir


def test_shipped_default_is_small_and_its_identity_tracks_the_weights(tiny_dir):
    assert tiny_dir == ensure_tiny_model(TinyModelConfig())  # installed once, cached under $LAMTUNE_HOME
    weights = (tiny_dir / "model.safetensors").stat().st_size
    assert weights <= 10 * 2**20
    model = load_model(ModelConfig(name="tiny"), torch.device("cpu"), trainable=False)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert tiny_model_dir(TinyModelConfig(pretrained=False)) != tiny_dir
    with pytest.raises(ValueError, match="pretrained=false"):
        ensure_tiny_model(TinyModelConfig(hidden_size=64))


def test_the_shipped_weights_are_hashed_once_per_process(monkeypatch):
    import hashlib
    from pathlib import Path

    from trainables import models

    h = hashlib.sha256()
    for name in models._SHIPPED_FILES:
        h.update((models.SHIPPED_TINY / name).read_bytes())
    reads: list[str] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    models._shipped_digest.cache_clear()
    dirs = {tiny_model_dir(TinyModelConfig()) for _ in range(3)}
    assert len(dirs) == 1 and models._shipped_digest() == h.hexdigest()[:16]
    assert reads == list(models._SHIPPED_FILES)  # each shipped file read once, for all four calls


def test_random_init_knob_keeps_the_tokenizer_ids():
    cfg = TinyModelConfig(pretrained=False, hidden_size=32, num_layers=1, intermediate_size=32)
    path = ensure_tiny_model(cfg)
    random_tok = load_tokenizer(ModelConfig(name="tiny", tiny=cfg))
    shipped_tok = load_tokenizer(ModelConfig(name="tiny"))
    text = "Tokens: Munboopou Epefong ya vinheng .\nAnswer: PROPN PROPN DET NOUN PUNCT"
    assert random_tok(text)["input_ids"] == shipped_tok(text)["input_ids"]
    assert (path / "config.json").exists()


def test_pretraining_conventions_hide_the_label_mapping():
    from trainables.pretrain import draw_convention, relabel
    from trainables.tasks import synthetic

    rng = random.Random(0)
    seen = {tuple(sorted(draw_convention("nli", rng).items())) for _ in range(200)}
    assert len(seen) == 6  # every mapping of the three label words is drawn
    r = synthetic.generate("ner", "en", "train", 1, seed=1001)[0]
    conv = {"PER": "LOC", "ORG": "PER", "LOC": "ORG"}
    swapped = relabel("ner", r, conv)
    assert [t[2:] for t in swapped["ner_tags"] if t != "O"] == [conv[t[2:]] for t in r["ner_tags"] if t != "O"]


@pytest.mark.e2e
def test_fewshot_beats_zero_shot_in_every_language():
    from trainables.evaluate import eval_items, evaluate

    torch.manual_seed(0)
    cfg = TrialConfig(model=ModelConfig(name="tiny"),
                      eval=EvalConfig(max_new_tokens={"nli": 3, "pa": 3, "qa": 12, "ner": 24, "pos": 24}))
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "tasks": ["ner", "pos"], "synthetic_sizes": {"train": 20, "dev": 20, "test": 12}})})
    tok = load_tokenizer(cfg.model)
    model = load_model(cfg.model, torch.device("cpu"), trainable=False)
    scores = {}
    for fewshot in (False, True):
        items = eval_items(cfg, tok, "test", 6, fewshot=fewshot)
        scores[fewshot], _ = evaluate(model, tok, items, cfg, torch.device("cpu"))
    base, few = scores[False], scores[True]
    assert few["avg"] >= base["avg"] + 30, (base["avg"], few["avg"])
    for lang in ("en", "hi", "es", "de", "fr", "zh"):
        assert few[f"pos/{lang}/acc"] > base[f"pos/{lang}/acc"] + 15, lang

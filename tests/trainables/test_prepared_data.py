"""A sweep's tokenised data: built once per experiment, read back equal, rebuilt when what shapes it changes."""

from __future__ import annotations

from pathlib import Path

from trainables.config import TrialConfig
from trainables.data import training_set
from trainables.evaluate import eval_items
from trainables.prepared_data import prepared, prepared_key

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "xtreme-sample"


def _cfg(tmp_path: Path, **data) -> TrialConfig:
    return TrialConfig.model_validate({
        "experiment_dir": str(tmp_path),
        "data": {"source": "synthetic", "max_train_per_task": 12, "tasks": ["nli", "ner"], **data},
        "eval": {"dev_per_pair": 3, "test_per_pair": 4, "test_split": "dev"}})


def _counting(build):
    calls = []

    def counted():
        calls.append(1)
        return build()
    return counted, calls


def test_the_second_trial_reads_what_the_first_built(tmp_path, tiny_tokenizer):
    cfg = _cfg(tmp_path)
    build, calls = _counting(lambda: training_set(cfg, tiny_tokenizer))
    first = prepared(cfg, tiny_tokenizer, "train", build)
    second = prepared(cfg, tiny_tokenizer, "train", build)
    assert len(calls) == 1
    assert second == first == training_set(cfg, tiny_tokenizer)  # an independent build agrees
    assert len(list((tmp_path / "prepared").glob("train-*.pkl"))) == 1


def test_evaluation_items_round_trip_equal_for_the_real_sample(tmp_path, tiny_tokenizer):
    cfg = _cfg(tmp_path, source=f"local:{SAMPLE}", tasks=["nli", "pos"])
    for fewshot in (False, True):
        what = f"eval-test{'-fewshot' * fewshot}"
        direct = eval_items(cfg, tiny_tokenizer, cfg.eval.test_split, cfg.eval.test_per_pair, fewshot)
        stored = prepared(cfg, tiny_tokenizer, what, lambda: direct)
        build, calls = _counting(lambda: [])
        assert prepared(cfg, tiny_tokenizer, what, build) == stored == direct and not calls
    assert direct and any(item.lang == "hi" for item in direct)


def test_what_shapes_the_data_changes_the_file(tmp_path, tiny_tokenizer):
    base = prepared_key(_cfg(tmp_path), tiny_tokenizer, "train")
    assert prepared_key(_cfg(tmp_path), tiny_tokenizer, "train") == base
    assert prepared_key(_cfg(tmp_path, max_train_per_task=13), tiny_tokenizer, "train") != base
    assert prepared_key(_cfg(tmp_path, seed=7), tiny_tokenizer, "train") != base
    assert prepared_key(_cfg(tmp_path), tiny_tokenizer, "eval-dev") != base
    other_model = _cfg(tmp_path)
    other_model.model.tiny.vocab_size = 1024
    assert prepared_key(other_model, tiny_tokenizer, "train") != base
    # The λ policy and the training knobs do not shape the data: every trial of a sweep shares it.
    other_variant = _cfg(tmp_path)
    other_variant.train.lr = 1e-3
    other_variant.variant.condition = "distill"
    assert prepared_key(other_variant, tiny_tokenizer, "train") == base


def test_a_torn_file_is_rebuilt_and_no_experiment_dir_stores_nothing(tmp_path, tiny_tokenizer):
    cfg = _cfg(tmp_path)
    path = tmp_path / "prepared" / f"{prepared_key(cfg, tiny_tokenizer, 'train')}.pkl"
    path.parent.mkdir()
    path.write_bytes(b"\x80\x05\x95half")  # a writer killed mid-file (the rename makes this rare)
    build, calls = _counting(lambda: ["rebuilt"])
    assert prepared(cfg, tiny_tokenizer, "train", build) == ["rebuilt"] and calls == [1]
    assert prepared(cfg, tiny_tokenizer, "train", build) == ["rebuilt"] and calls == [1]
    bare = _cfg(tmp_path)
    bare.experiment_dir = ""
    build, calls = _counting(lambda: [1])
    prepared(bare, tiny_tokenizer, "train", build)
    prepared(bare, tiny_tokenizer, "train", build)
    assert calls == [1, 1]

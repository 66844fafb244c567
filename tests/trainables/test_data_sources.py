"""Data settings for real sources: where the training pool comes from (data.train_split), local
paths made absolute, and the early check that every split a trial reads is there."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from tests.conftest import XTREME_SAMPLE
from trainables.config import DataConfig, TrialConfig
from trainables.data import DataUnavailable, check_sources, training_pools

needs_sample = pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="shared XTREME sample not present")


def sample_cfg(**data) -> TrialConfig:
    return TrialConfig.model_validate({"data": {"source": f"local:{XTREME_SAMPLE}", **data.pop("data", {})}, **data})


def test_train_split_field():
    assert DataConfig().train_split == "train"
    assert DataConfig(train_split="dev").train_split == "dev"
    with pytest.raises(ValidationError, match=r"train_split\s+Input should be 'train' or 'dev'"):
        DataConfig(train_split="test")


def test_local_source_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert DataConfig(source="local:xtreme").source == f"local:{tmp_path / 'xtreme'}"
    assert DataConfig(source="local:~/x").source == f"local:{os.path.expanduser('~')}/x"
    assert DataConfig(source=f"local:{tmp_path}").source == f"local:{tmp_path}"
    with pytest.raises(ValidationError, match=r"must be 'synthetic', 'hub' or 'local:<dir>'"):
        DataConfig(source="local: ")


@needs_sample
def test_training_pool_from_the_dev_split():
    cfg = sample_cfg(data={"train_split": "dev", "max_train_per_task": 7})
    pools = training_pools(cfg)
    assert set(pools) == {"nli", "pa", "qa", "ner", "pos"}
    for task, pool in pools.items():
        assert len(pool) == 7
        assert all(r["id"].startswith(f"{task}-en-dev-") for r in pool)
    # The default (train) finds PAN-X and UDPOS English train in the sample, and no XNLI train.
    assert {t: len(p) for t, p in training_pools(sample_cfg(data={"tasks": ["ner", "pos"]})).items()} == {
        "ner": 2000, "pos": 2000}
    with pytest.raises(DataUnavailable, match=r"missing file .*xnli/train-en\.tsv"):
        training_pools(sample_cfg())


@needs_sample
def test_check_sources_fails_early_or_passes():
    with pytest.raises(DataUnavailable, match=r"xnli/train-en\.tsv"):
        check_sources(sample_cfg())
    with pytest.raises(DataUnavailable, match=r"xnli/test-en\.tsv has no label column"):
        check_sources(sample_cfg(data={"train_split": "dev"}))
    check_sources(sample_cfg(data={"train_split": "dev"}, eval={"test_split": "dev"}))
    # NER and POS have real English training sets and labelled tests (German POS from CoNLL-U).
    check_sources(sample_cfg(data={"tasks": ["ner", "pos"]}))

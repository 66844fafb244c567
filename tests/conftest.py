"""Shared fixtures: offline Hugging Face, a per-checkout artifact home, the tiny model, a Ray session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The shared XTREME sample, read in place ($LAMTUNE_XTREME_SAMPLE for a checkout elsewhere, e.g. a worktree).
XTREME_SAMPLE = Path(os.environ.get("LAMTUNE_XTREME_SAMPLE", REPO.parent / "shared" / "data" / "xtreme-sample")).resolve()
#: The record schema every source returns (synthetic, local XTREME, hub), written out independently.
RECORD_FIELDS = {
    "nli": {"id", "premise", "hypothesis", "label"},
    "pa": {"id", "sentence1", "sentence2", "label"},
    "qa": {"id", "context", "question", "answers"},
    "ner": {"id", "tokens", "ner_tags"},
    "pos": {"id", "tokens", "pos_tags"},
}

# Tests never reach the network; artifacts (the tiny model) are built once per checkout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LAMTUNE_HOME", str(REPO / ".lamtune-test"))
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """Directory of the tiny default model (built on first use)."""
    from trainables.config import TinyModelConfig
    from trainables.models import ensure_tiny_model

    return ensure_tiny_model(TinyModelConfig())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir: Path):
    """The tiny default's tokenizer."""
    from trainables.config import ModelConfig
    from trainables.models import load_tokenizer

    return load_tokenizer(ModelConfig(name="tiny"))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray sized for a 2-core CI machine (logical CPUs: trial drivers mostly wait)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()

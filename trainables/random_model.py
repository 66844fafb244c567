"""Random-weight models of published shapes (`model.name=random:llama-3.2-3b`): the real architecture
and vocabulary size with seeded random weights and a tokenizer learnt from the task text, built
once under $LAMTUNE_HOME without any download, to size a cluster or benchmark before fetching a model.

Random weights rarely emit EOS, so evaluation generates to every task's token budget: the worst
case for speed. The tokenizer is a byte-level BPE with the architecture's vocabulary size and
Llama-3's pre-tokenisation, trained on the sweep's own data (or any tokenizer named in
`model.random.tokenizer`, e.g. the real model's, which is a few MB), so sequence lengths are near
what the real model would see.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.random_shapes import ARCHITECTURES, architecture

if TYPE_CHECKING:
    from trainables.config import ModelConfig

#: Bump when the build recipe (tokenizer corpus, pre-tokenisation, init) changes.
RANDOM_VERSION = "v2"
#: Specials in the order of their ids (bos, eos, pad), Llama-3's names.
SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>")


def corpus_source(cfg: "ModelConfig") -> str:
    """The data source whose text the BPE tokenizer learns from (the sweep fills it from data.source)."""
    return cfg.random.corpus or "synthetic"


def random_model_dir(cfg: "ModelConfig") -> Path:
    """Where the random model of this config (tokenizer + weights) lives on disk."""
    from trainables.model_store import lamtune_home

    arch = architecture(cfg.name)
    fields = cfg.random.model_dump() | {"corpus": corpus_source(cfg)}
    if fields["tokenizer"] != "bpe":
        del fields["corpus"], fields["corpus_per_pair"]  # the corpus only matters to a learnt tokenizer
    key = json.dumps({"v": RANDOM_VERSION, "arch": ARCHITECTURES[arch], **fields}, sort_keys=True)
    return lamtune_home() / "random" / f"{arch}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def corpus_texts(source: str, per_pair: int) -> list[str]:
    """Rendered prompts and answers of every task, language and split the source has (≤ per_pair each)."""
    from trainables.bpe import rendered_texts
    from trainables.config import DataConfig
    from trainables.data import DataUnavailable, available_langs, load_records
    from trainables.tasks.schema import TASKS

    data = DataConfig(source=source)
    texts: list[str] = []
    missing: list[str] = []
    for task in TASKS:
        for lang in sorted(set(available_langs(data, task)) | {"en"}):
            for split in ("train", "dev", "test"):
                try:
                    records = load_records(data, task, lang, split)
                except DataUnavailable as err:
                    if source == "hub":  # unreachable: every further call would wait as long
                        raise ValueError(f"model.random.corpus: {err}") from None
                    missing.append(str(err))  # a split this folder lacks (the XTREME sample has no train for most)
                    continue
                texts += rendered_texts(task, records[:per_pair])
    if not texts:
        raise ValueError(f"model.random.corpus {source!r}: no text to learn a tokenizer from "
                         f"({missing[0] if missing else 'no records'}); use 'synthetic', 'local:<dir>' with "
                         "XTREME files, or a tokenizer folder in model.random.tokenizer")
    return texts


def random_tokenizer(cfg: "ModelConfig", vocab_size: int) -> Any:
    """The configured tokenizer: a BPE learnt from the corpus, or one loaded by path or hub id."""
    from trainables.bpe import LLAMA3_SPLIT, train_bpe

    if cfg.random.tokenizer == "bpe":
        return train_bpe(corpus_texts(corpus_source(cfg), cfg.random.corpus_per_pair), vocab_size,
                         LLAMA3_SPLIT, SPECIALS)
    from transformers import AutoTokenizer

    from trainables.model_store import ModelUnavailable

    try:
        tok = AutoTokenizer.from_pretrained(cfg.random.tokenizer)
    except (OSError, ValueError, ConnectionError) as err:
        raise ModelUnavailable(
            f"model.random.tokenizer {cfg.random.tokenizer!r}: cannot load it ({type(err).__name__}); give a local "
            "tokenizer folder, or 'bpe' to learn one from the data") from None
    if len(tok) > vocab_size:
        raise ValueError(f"model.random.tokenizer {cfg.random.tokenizer!r} has {len(tok)} tokens, more than "
                         f"{cfg.name}'s vocabulary of {vocab_size}")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def seeded_model(config: Any, seed: int) -> Any:
    """A bf16 causal LM of this config with Llama's initialisation drawn from `seed` on the CPU.

    Every weight is drawn once from its own seeded CPU generator (seed and the parameter's index),
    so every node that builds the model gets the same weights however the draws are scheduled:
    Linear and embedding weights ~ N(0, initializer_range²), the padding row of the embeddings
    zero, norms one. The modules' own initialisers are skipped (they draw every weight twice), and
    the parameters are drawn in parallel, one thread each (torch's own threads contend for a
    generator; the 3B shape on two busy cores: 50 s before, 19 s so)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.tie_weights()
    std = getattr(config, "initializer_range", 0.02)
    params = list(model.named_parameters())  # tied weights are listed once

    def draw(index: int) -> None:
        name, param = params[index]
        with torch.no_grad():  # per thread
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
            list(pool.map(draw, range(len(params))))
    finally:
        torch.set_num_threads(threads)
    pad = getattr(config, "pad_token_id", None)
    if pad is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight[pad].zero_()
    return model


def build_random_model(cfg: "ModelConfig", out: Path) -> int:
    """Save the tokenizer and a seeded random-weight model (bf16) of the architecture to `out`; its parameters."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    shape = ARCHITECTURES[architecture(cfg.name)]
    tok = random_tokenizer(cfg, shape["vocab_size"])
    tok.save_pretrained(out)
    config = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = seeded_model(config, cfg.random.init_seed)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def ensure_random_model(cfg: "ModelConfig") -> Path:
    """Build (once) and return the directory of this random model under $LAMTUNE_HOME."""
    from trainables.model_store import install_once

    return install_once(random_model_dir(cfg), lambda tmp: build_random_model(cfg, tmp))

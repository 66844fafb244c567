"""Model and tokenizer from a Hugging Face name or path, the embedded tiny default, LoRA, and the
answer-span forward that computes vocabulary logits only where a loss or metric needs them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from trainables.config import ModelConfig, TinyModelConfig
from trainables.fused_norm import use_fused_norm
from trainables.lora_forward import use_lean_lora
from trainables.model_store import ModelUnavailable, install_once, lamtune_home  # noqa: F401 (part of this API)

TINY = "tiny"
#: Bump when the tiny default's tokenizer corpus or architecture recipe changes.
TINY_VERSION = "v3"
#: The shipped pre-trained default (package data): tokenizer, config and weights.
SHIPPED_TINY = Path(__file__).resolve().parent / "tiny_model"
_SHIPPED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


# --------------------------------------------------------------------------- the tiny default


@functools.lru_cache(maxsize=1)
def _shipped_digest() -> str:
    """A short hash of the shipped weights and tokenizer (part of the tiny default's identity)."""
    h = hashlib.sha256()
    for name in _SHIPPED_FILES:
        h.update((SHIPPED_TINY / name).read_bytes())
    return h.hexdigest()[:16]


def tiny_model_dir(cfg: TinyModelConfig) -> Path:
    """Where the tiny default (tokenizer + weights) for this config lives on disk."""
    fields = cfg.model_dump()
    if cfg.pretrained:
        fields["pretrained"] = _shipped_digest()
    key = json.dumps({"v": TINY_VERSION, **fields}, sort_keys=True)
    return lamtune_home() / "tiny" / hashlib.sha256(key.encode()).hexdigest()[:16]


def check_tiny_shape(cfg: TinyModelConfig) -> None:
    """With `pretrained`, the shape fields must be the shipped model's (one line naming the fix)."""
    if not cfg.pretrained:
        return
    from trainables.pretrain import SHAPE

    wrong = {k: getattr(cfg, k) for k, v in SHAPE.items() if getattr(cfg, k) != v}
    if wrong:
        raise ValueError(
            f"model.tiny: {wrong} differ from the shipped pre-trained default {SHAPE}; "
            "set model.tiny.pretrained=false for a random init of another shape")


def ensure_tiny_model(cfg: TinyModelConfig) -> Path:
    """Install (once) and return the directory of the tiny default under $LAMTUNE_HOME.

    pretrained (the default): the shipped tokenizer and weights, pre-trained by
    `python -m trainables.pretrain` to learn in context on the synthetic tasks (copied, no training).
    Otherwise a randomly initialised small Llama of the configured shape (seeded), with the shipped
    tokenizer when the vocabulary size matches, else a BPE tokenizer trained on the synthetic tasks."""
    check_tiny_shape(cfg)

    def build(tmp: Path) -> None:
        if cfg.pretrained:
            for name in _SHIPPED_FILES:
                shutil.copyfile(SHIPPED_TINY / name, tmp / name)
        else:
            tokenizer = _tiny_tokenizer(cfg.vocab_size)
            tokenizer.save_pretrained(tmp)
            _build_tiny_llama(cfg, tokenizer).save_pretrained(tmp)

    return install_once(tiny_model_dir(cfg), build)


def _tiny_tokenizer(vocab_size: int) -> Any:
    """The shipped tokenizer when it has this vocabulary size, else one trained now."""
    from transformers import PreTrainedTokenizerFast

    from trainables.pretrain import SHAPE

    if vocab_size == SHAPE["vocab_size"]:
        return PreTrainedTokenizerFast.from_pretrained(SHIPPED_TINY)
    return _train_tiny_tokenizer(vocab_size)


def _tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: synthetic records of every task and language, rendered."""
    from trainables.prompts import _plain_text, build_messages
    from trainables.tasks import get_task
    from trainables.tasks import synthetic
    from trainables.tasks.schema import LANGS, TASKS

    lines = list(synthetic.corpus(seed=0))
    for task in TASKS:
        for lang in LANGS:
            records = synthetic.generate(task, lang, "train", 20, seed=0)
            for r in records:
                msgs = build_messages(task, r, records[:1])
                lines.append(_plain_text(msgs) + " " + get_task(task).answer(r))
    return lines


def _train_tiny_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with <pad>, <s>, </s>, trained on the synthetic corpus."""
    from trainables.bpe import train_bpe

    # Whole words (with their leading space) as pre-tokens, then bytes: GPT-2's regex would split
    # Devanagari words at every vowel sign (~3.6 tokens per Hindi word instead of ~1).
    return train_bpe(_tokenizer_corpus(), vocab_size, r" ?[^\s]+|\s+", ("<s>", "</s>", "<pad>"))


def _build_tiny_llama(cfg: TinyModelConfig, tokenizer: Any) -> nn.Module:
    """A randomly initialised LlamaForCausalLM of the configured shape (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.init_seed)
        return LlamaForCausalLM(config)


# --------------------------------------------------------------------------- loading


def model_path(cfg: ModelConfig) -> str:
    """The name or path `from_pretrained` should load for this config (builds the tiny default or a random model)."""
    from trainables.random_model import ensure_random_model
    from trainables.random_shapes import is_random

    if cfg.name == TINY:
        return str(ensure_tiny_model(cfg.tiny))
    if is_random(cfg.name):
        return str(ensure_random_model(cfg))
    return cfg.name


def prepare_model(cfg: ModelConfig, out: TextIO | None = None) -> str:
    """Build (once) the files a 'tiny' or 'random:' name stands for, saying so on `out` when that is slow."""
    from trainables.random_model import corpus_source, random_model_dir
    from trainables.random_shapes import is_random

    if out is not None and is_random(cfg.name) and not (random_model_dir(cfg) / "config.json").exists():
        learnt = f"a tokenizer learnt from {corpus_source(cfg)}" if cfg.random.tokenizer == "bpe" else cfg.random.tokenizer
        print(f"building {cfg.name} once (seeded random weights, {learnt}) in {random_model_dir(cfg)}",
              file=out, flush=True)
    return model_path(cfg)


def model_identity(cfg: ModelConfig) -> str:
    """A stable identity of the base model's weights (name + revision, the tiny shape hash, or the random build)."""
    from trainables.random_model import random_model_dir
    from trainables.random_shapes import is_random

    if cfg.name == TINY:
        return f"tiny:{tiny_model_dir(cfg.tiny).name}"
    if is_random(cfg.name):
        return f"random:{random_model_dir(cfg).name}"
    return f"{cfg.name}@{cfg.revision or 'main'}"


def _unavailable(cfg: ModelConfig, what: str, err: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"model.name {cfg.name!r}: cannot load the {what} ({type(err).__name__}); the Hugging Face hub "
        "is unreachable or the name is wrong. Use a local path (--set model.name=/path/to/model), the "
        "built-in default (--set model.name=tiny) or random weights of a published shape (--set "
        "model.name=random:llama-3.2-3b); for data use data.source=local:<dir> or synthetic."
    )


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer for this model, with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path(cfg), revision=cfg.revision)
    except (OSError, ValueError, ConnectionError) as err:
        raise _unavailable(cfg, "tokenizer", err) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a config's dtype name ('auto': bf16 on a GPU that has it, else fp32)."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def load_model(cfg: ModelConfig, device: torch.device, trainable: bool, path: str | None = None,
               on_host: bool = False) -> nn.Module:
    """The causal LM on `device` (with `on_host`: in host memory, in the dtype `device` gets, for the
    caller to move later); with `trainable` and finetune=lora, wrapped with LoRA adapters."""
    from transformers import AutoModelForCausalLM

    target = torch.device("cpu") if on_host else device
    try:
        # On a GPU the weights are read straight onto it (not built on the host and copied over).
        model = AutoModelForCausalLM.from_pretrained(
            path or model_path(cfg), revision=None if path else cfg.revision, dtype=resolve_dtype(cfg.dtype, device),
            device_map=str(target) if target.type == "cuda" else None,
        )
    except (OSError, ValueError, ConnectionError) as err:
        raise _unavailable(cfg, "model", err) from None
    model.to(target)
    if cfg.fused_norm:
        use_fused_norm(model)
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if cfg.finetune == "lora":
        model = add_lora(model, cfg)
    return model


def add_lora(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """The model wrapped with PEFT LoRA adapters on the configured projections that it has."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.lora_targets if t in present]
    if not targets:
        raise ValueError(f"model.lora_targets {cfg.lora_targets} match no module of {cfg.name!r}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    adapters_in_activation_dtype(model)
    if cfg.lean_lora:
        use_lean_lora(model)
    return model


class ActivationDtypeLinear(nn.Linear):
    """A LoRA factor whose weight stays fp32 (the optimizer's master copy) but that multiplies in
    the dtype of its input, so a bf16 model's adapters run bf16 GEMMs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ Wᵀ (+ b) computed in x's dtype; gradients reach the fp32 weight through the cast."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.weight.to(x.dtype), bias)


def adapters_in_activation_dtype(model: nn.Module) -> int:
    """Make every LoRA factor of a PEFT model compute in the activations' dtype; returns the count.

    PEFT keeps adapter weights in fp32 and casts each projection's input to fp32 (two TF32 GEMMs
    plus a full-size activation copy per projection, forward and backward: bench/results/NOTES.md).
    Here the input keeps its dtype and the small weight is cast instead: mixed precision with fp32
    master weights, as torch.autocast would do. An fp32 model is unchanged; parameter names and
    PEFT checkpoints are unchanged."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        module.cast_input_dtype_enabled = False
        for factors in (module.lora_A, module.lora_B):
            for linear in factors.values():
                if type(linear) is nn.Linear:
                    linear.__class__ = ActivationDtypeLinear
                    n += 1
    return n


def causal_lm(model: nn.Module) -> nn.Module:
    """The underlying `*ForCausalLM` of a plain, PEFT-wrapped or DDP-wrapped model."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        else:
            return model


class AnswerSpanLM(nn.Module):
    """Runs the decoder over whole sequences but the vocabulary head only at chosen positions.

    forward(input_ids [B,T], attention_mask [B,T], position_ids [B,T], rows [N], cols [N])
    → logits [N, V] at positions (rows[i], cols[i]). Wrap this module (not the inner model) in
    DDP so that gradient synchronisation sees the call.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        #: Recorded decoder passes (trainables.train_graphs.DecoderGraphs) for right-padded training
        #: batches, and whether the next forward may use them (a split-gradient step may not).
        self.graphs: Any = None
        self.use_graphs = True

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        """Vocabulary logits [N, V] at the (row, col) positions."""
        lm = causal_lm(self.model)
        if self.graphs is not None and self.use_graphs and lm.training and torch.is_grad_enabled():
            # Right-padded training batches only, rows packed end to end (see train_graphs.py).
            picked = self.graphs.answer_hidden(input_ids, attention_mask, rows, cols)
        else:
            picked = lm.get_decoder()(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state[rows, cols]
        logits = lm.get_output_embeddings()(picked)
        cap = getattr(lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits


def compile_decoder_layers(model: nn.Module, mode: str | None = None, retains_graph: bool = False) -> int:
    """Compile each decoder layer in place with torch.compile (regional: one trace reused by every
    layer, so compiling a 28-layer model costs about one layer's compile); returns the count.

    `retains_graph`: some backward passes will keep the graph (`retain_graph=True`: the split-gradient
    policies back-propagate CE and KD apart through one forward). A compiled backward that donates
    its saved buffers refuses those, so donation is turned off for this process (compilation is
    lazy: the setting is read at the first forward)."""
    import torch._dynamo
    import torch._functorch.config

    layers = getattr(causal_lm(model).get_decoder(), "layers", None)
    if layers is None:
        return 0
    # One graph per (first layer, the others: its input needs no gradient) with dynamic lengths
    # from the start; the limit leaves room for the rest (training on the 3B shape once hit 8).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    if retains_graph:
        torch._functorch.config.donated_buffer = False
    for layer in layers:
        layer.compile(mode=mode, dynamic=True)
    return len(layers)


#: Compiled versions a decoder layer may have before torch falls back to eager (its default: 8).
RECOMPILE_LIMIT = 32

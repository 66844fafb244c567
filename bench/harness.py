"""What every benchmark section shares: the model and batch shapes, a randomly initialised
Llama-shaped model, PEFT LoRA as the seed used it, random batches, and the timing/memory helpers.

Speed does not depend on weight values, so weights are random. A figure is the median of timed
repetitions after warm-up, with CUDA synchronisation; peak memory is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Shape:
    """Model and batch shapes of one benchmark configuration."""

    vocab: int = 128_256
    hidden: int = 3072
    intermediate: int = 8192
    layers: int = 28
    heads: int = 24
    kv_heads: int = 8
    batch: int = 8
    student_len: int = 256
    teacher_len: int = 1280
    answer: int = 32
    top_k: int = 256


#: The study bench's sizes (bench/study_gpu.py, run 6): batch 8 of ~112-token prompts with ~12-token
#: answers, 5-shot teacher prompts of ~457 tokens, tokenised by the 128,256-token byte-level BPE.
STUDY = Shape(batch=8, student_len=124, teacher_len=464, answer=12)

TINY = Shape(vocab=1024, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, batch=2, student_len=32,
             teacher_len=96, answer=8, top_k=16)


def build_model(s: Shape, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A randomly initialised Llama-3.2-3B-shaped causal LM (tied embeddings, as the real one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                      num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500_000.0)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
    return model.eval()


def n_params(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def with_lora(model: torch.nn.Module, dropout: float) -> torch.nn.Module:
    """PEFT LoRA r=16, alpha=32 on every linear projection (the seed's student)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout,
                                            target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int, mean: bool = False) -> float:
    """Median (or mean) seconds of one call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times) if mean else statistics.median(times)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")


def random_ids(s: Shape, batch: int, length: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(3, s.vocab, (batch, length), generator=g).to(device)


def span_index(batch: int, length: int, answer: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the positions predicting the last `answer` tokens of each sequence (causal)."""
    rows = torch.arange(batch, device=device).repeat_interleave(answer)
    cols = torch.arange(length - answer - 1, length - 1, device=device).repeat(batch)
    return rows, cols


def result_key(name: str, taken: dict[str, Any]) -> str:
    """`name`, or `name#k` when the same variant is measured for the k-th time in one run."""
    return name if name not in taken else f"{name}#{sum(k.split('#')[0] == name for k in taken) + 1}"

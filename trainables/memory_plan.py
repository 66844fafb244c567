"""GPU memory of a trial, planned: how much one trial needs (so that `gpus_per_worker: auto` can
decide how many trials share a GPU) and how much its evaluation may spend on KV cache.

The estimate is deliberately simple and errs high; each trial also reports what it really used
(`mem/peak_gpu_gb`), which the sweep prints, so the estimate can be checked on every run.
Figures that calibrate it (3B Llama shape, bf16, one H200): a LoRA step of 8×256 tokens peaked
at 15.8 GB with 6.4 GB of weights, i.e. ≈ 53 bytes × hidden × layers per student token.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainables.config import ResourcesConfig, TrialConfig
from trainables.kv_cache import attention_heads

GB = 1024**3
#: Activation bytes kept for backward, per student token, per unit of hidden × layers (bf16).
ACTIVATION_BYTES = 56
#: Answer-span logits kept per answer token: fp32 logits, log-softmax and their gradients.
LOGIT_COPIES = 4
#: Assumed answer tokens per training example, for the logits term (NER/POS answers are long).
ANSWER_TOKENS = 64
#: What the caching allocator holds beyond what is allocated (fragmentation across batch shapes).
#: On the H200 an evaluation-only 3B trial peaked at 31.3 GB allocated and held 43.5 GB: ×1.4.
ALLOCATOR_SLACK = 1.4
#: Most trials that may share one GPU (beyond this the step's kernels just queue).
MAX_TRIALS_PER_GPU = 4
#: Fraction of a GPU's memory the planner hands out (the rest: CUDA context, fragmentation).
USABLE = 0.9


def parameter_count(config: Any) -> int:
    """Parameters of a Llama-style decoder with this config (embeddings counted once if tied)."""
    h, layers, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads, kv, head_dim = attention_heads(config)
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * config.intermediate_size
    embed = v * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return layers * (attn + mlp + 2 * h) + embed + h


def adapted_parameters(cfg: TrialConfig, config: Any) -> int:
    """Parameters of the projections LoRA adapts (what `eval.merge_lora` copies while evaluating)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads, kv, head_dim = attention_heads(config)
    sizes = {"q_proj": h * heads * head_dim, "o_proj": h * heads * head_dim, "k_proj": h * kv * head_dim,
             "v_proj": h * kv * head_dim, "gate_proj": h * config.intermediate_size,
             "up_proj": h * config.intermediate_size, "down_proj": h * config.intermediate_size}
    return layers * sum(sizes.get(t, 0) for t in cfg.model.lora_targets)


def dtype_bytes(cfg: TrialConfig) -> int:
    """Bytes of one weight or activation element in the trial's dtype (bf16/fp16: 2, fp32: 4)."""
    return 4 if cfg.model.dtype == "float32" else 2


def token_activation_bytes(cfg: TrialConfig, config: Any) -> int:
    """Planned bytes a training step keeps for backward per student token."""
    dtype_size = dtype_bytes(cfg)
    return config.hidden_size * config.num_hidden_layers * ACTIVATION_BYTES * dtype_size // 2


def step_bytes(cfg: TrialConfig, config: Any) -> int:
    """Planned transient bytes of a worst-case training step: every row of a rank's batch at
    data.max_student_len, plus the answer logits and their gradients."""
    per_rank = math.ceil(cfg.train.batch_size / cfg.resources.num_workers)
    return (per_rank * cfg.data.max_student_len * token_activation_bytes(cfg, config)
            + per_rank * ANSWER_TOKENS * config.vocab_size * 4 * LOGIT_COPIES)


def weight_bytes(cfg: TrialConfig, config: Any) -> int:
    """Bytes of the model's weights in the trial's dtype (bf16/fp16: 2 per parameter, fp32: 4)."""
    return parameter_count(config) * dtype_bytes(cfg)


def gpu_share(r: ResourcesConfig) -> float:
    """The fraction of a GPU one worker plans its memory on: gpus_per_worker, 1.0 while 'auto'."""
    return r.gpus_per_worker if isinstance(r.gpus_per_worker, float) else 1.0


def trial_bytes(cfg: TrialConfig, config: Any, trains: bool = True) -> int:
    """Estimated peak GPU bytes of one trial's worker: weights (and full fine-tuning's optimizer
    state) throughout, plus the larger of the training step's and the evaluation's transient memory
    (evaluation runs between steps, after the step's activations are freed). Recorded training
    graphs (train.cuda_graphs) are not counted: they only take what the share leaves (graph_budget_bytes)."""
    dtype_size = dtype_bytes(cfg)
    params = parameter_count(config)
    need = weight_bytes(cfg, config)
    training = 0
    evaluation = int(cfg.eval.memory_gb * GB)
    if trains:
        if cfg.model.finetune == "full":
            need += params * (dtype_size + 8)  # gradients + AdamW's two moments (fp32)
        elif cfg.eval.merge_lora:
            evaluation += adapted_parameters(cfg, config) * dtype_size  # the merged weight copies
        training = step_bytes(cfg, config)
    return int((need + max(training, evaluation)) * ALLOCATOR_SLACK)


def free_in_share(cfg: TrialConfig, device: torch.device) -> int:
    """Bytes of this trial's GPU share (resources.gpus_per_worker of the device, ×USABLE) that the
    process does not hold now (allocated or cached); negative when it holds more than its share."""
    share = gpu_share(cfg.resources)
    total = torch.cuda.get_device_properties(device).total_memory
    held = max(torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device))
    return int(total * min(1.0, share) * USABLE) - held


def graph_budget_bytes(cfg: TrialConfig, config: Any, device: torch.device) -> int:
    """Bytes this trial's recorded training graphs may hold: what its GPU share leaves free now
    (beside weights, optimizer) less a worst-case eager step (one that does not fit runs eagerly)."""
    return max(0, free_in_share(cfg, device) - step_bytes(cfg, config))


def trials_per_gpu(need_bytes: int, gpu_bytes: int) -> int:
    """How many trials of `need_bytes` fit on a GPU of `gpu_bytes` (1 … MAX_TRIALS_PER_GPU)."""
    return max(1, min(MAX_TRIALS_PER_GPU, int(gpu_bytes * USABLE // max(1, need_bytes))))


def eval_budget_bytes(cfg: TrialConfig, device: torch.device) -> int:
    """Bytes this trial's evaluation may spend on KV cache and prefill now.

    On a GPU: the trial's share of the device (gpus_per_worker × its memory, ×USABLE) minus what
    the process holds, and at least eval.memory_gb; on the CPU: eval.memory_gb."""
    floor = int(cfg.eval.memory_gb * GB)
    if device.type != "cuda":
        return floor
    return max(floor, free_in_share(cfg, device))

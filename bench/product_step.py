"""lamtune's trial step as the product runs it, on a benchmark-shaped random model.

`ProductStep.step()` is `trainables.loop.train_step` on a `TrainState` built by the product's own
`start_training`: host collation and the copy to the device, the teacher cache's gather (an
in-memory stand-in with the cache's read interface), vocabulary logits only at the answer span,
`token_losses` + the fixed λ policy + `combine_losses`, the product's (unfused) AdamW, gradient
clipping, the LR schedule and the per-step bookkeeping with its one host sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from bench.harness import Shape, build_model, random_ids, with_lora
from trainables.alignment import Encoded, collate
from trainables.fused_norm import use_fused_norm
from trainables.lora_forward import use_lean_lora
from trainables.config import DataConfig, TrainConfig, TrialConfig
from trainables.loop import TrainState, record_decoder_passes, start_training, train_step
from trainables.losses import TeacherTopK
from trainables.models import adapters_in_activation_dtype, compile_decoder_layers
from trainables.policies import make_policy
from trainables.tasks.schema import TASKS

#: Distinct examples in the benchmark's pool (batches cycle through them).
POOL_BATCHES = 4


@dataclass(frozen=True)
class BenchExample:
    """What the loop reads of a training example: its task, student encoding and cache key."""

    task: str
    student: Encoded

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, str(hash(self.student.input_ids)))


class MemoryCache:
    """The teacher cache's read interface (`top_k`, `gather`) over host tensors, one block per example,
    concatenated per batch like TeacherCache's memory-mapped rows."""

    def __init__(self, s: Shape, examples: list[BenchExample], device: torch.device) -> None:
        self.top_k = s.top_k
        self.rows: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        g = torch.Generator(device="cpu").manual_seed(7)
        for e in examples:
            logits = torch.randn(len(e.student.answer_ids), s.vocab, generator=g)
            logp = torch.log_softmax(logits, -1)
            top, ids = logp.topk(s.top_k, -1)
            gold = torch.tensor(e.student.answer_ids)
            self.rows[e.key] = {
                "ids": ids.int(), "logprobs": top.half(),
                "tail_logmass": torch.logsumexp(logp.scatter(-1, ids, float("-inf")), -1),
                "logsumexp": torch.logsumexp(logits, -1), "gold_id": gold,
                "gold_logprob": logp.gather(-1, gold[:, None])[:, 0], "entropy": -(logp.exp() * logp).sum(-1),
            }

    def gather(self, keys) -> tuple[TeacherTopK, dict[str, torch.Tensor]]:
        """Teacher top-K of the concatenated answer tokens of `keys`, plus gold id, log-prob and entropy."""
        parts = [self.rows[k] for k in keys]

        def cat(c: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.cat([p[c] for p in parts]).to(dtype)

        topk = TeacherTopK(cat("ids", torch.long), cat("logprobs", torch.float32), cat("tail_logmass", torch.float32),
                           cat("logsumexp", torch.float32))
        return topk, {"gold_id": cat("gold_id", torch.long), "gold_logprob": cat("gold_logprob", torch.float32),
                      "entropy": cat("entropy", torch.float32)}


class ProductStep:
    """A trial's training state on a random model; `step()` runs the product's `train_step` once."""

    def __init__(self, s: Shape, device: torch.device, dtype: torch.dtype, finetune: str = "lora",
                 dropout: float = 0.0, compile: bool | str = False, lam: float = 0.5,
                 base: torch.nn.Module | None = None, fp32_adapter_compute: bool = False,
                 compile_mode: str | None = None, policy: str = "fixed", graphs: bool = False,
                 fused_norm: bool = True, lean_lora: bool = True) -> None:
        model = base if base is not None else build_model(s, device, dtype)
        use_fused_norm(model, fused_norm)  # the product's model.fused_norm (trainables.models.load_model)
        if finetune == "lora":
            model.requires_grad_(False)
            model = with_lora(model, dropout)
            if not fp32_adapter_compute:  # the product's add_lora does this (trainables.models)
                adapters_in_activation_dtype(model)
                use_lean_lora(model, lean_lora)
        else:
            model.requires_grad_(True)
        model.train()
        if compile and compile != "full":
            compile_decoder_layers(model, compile_mode, retains_graph=policy == "meta")
        ids = random_ids(s, s.batch * POOL_BATCHES, s.student_len, device, 2).cpu()
        examples = [BenchExample(TASKS[i % len(TASKS)], Encoded(tuple(r.tolist()), s.student_len - s.answer))
                    for i, r in enumerate(ids)]
        tasks = list(TASKS)
        cfg = TrialConfig(data=DataConfig(tasks=tasks),
                          train=TrainConfig(steps=10_000_000, batch_size=s.batch, lr=2e-4, weight_decay=0.01,
                                            warmup_steps=0, grad_clip=1.0, kd_loss="forward_kl"))
        state = TrainState(cfg, 0, 1, device, SimpleNamespace(pad_token_id=0), model, dev_items=[], test_items=[],
                           out_dir=None)
        self.state = start_training(state, examples, MemoryCache(s, examples, device),
                                    make_policy("fixed", {"lam": lam}, tasks))
        if policy == "meta":  # the study's meta-λ: split KD gradients and a dev gradient every 10 steps
            self.state.policy = make_policy("meta", {"every": 10, "val_batch": 16}, tasks)
            dev = [e.student for e in examples]
            self.state.dev_batch = lambda: collate(dev[:16], 0, "right")
        elif policy != "fixed":
            raise ValueError(f"policy must be 'fixed' or 'meta', got {policy!r}")
        if compile == "full":  # the whole answer-span forward as one graph (CUDA graphs possible)
            self.state.span = torch.compile(self.state.plain_span, mode=compile_mode)
        if graphs:  # the product's train.cuda_graphs: recorded decoder passes (eager off a GPU)
            record_decoder_passes(self.state)
        self.n = 0

    def step(self) -> dict[str, float]:
        """One `train_step`; its scalars."""
        self.n += 1
        return train_step(self.state, self.n)

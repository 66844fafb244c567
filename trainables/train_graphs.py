"""CUDA graphs for the training step: the decoder's forward and backward over a right-padded batch,
recorded once per padded length and replayed (`train.cuda_graphs`).

Why: at the study's sizes (batch 8 of ~124-token prompts, 3B model) the eager LoRA step is bound
by kernel launches, not by the GPU: 28 layers × 7 adapted projections, each a few small kernels,
forward and backward (217 ms a step for ~17 ms of matrix work, bench/results/NOTES.md). A replayed
graph launches all of them at once.

How, and why it is exact:
- A graph replays fixed shapes, so a batch of length T is padded on the right to the next multiple
  of `bucket` tokens (at most `max_len / bucket` graphs per trial, recorded when first needed).
- The decoder runs without an attention mask, causal only (SDPA's causal kernel, no mask built on
  the host). Training batches are right-padded, so
  a real token attends only to the real tokens before it, and a pad position (which no loss reads)
  sends no gradient back. The hidden states at real positions are those of the masked forward.
- The graphs record only the decoder (embeddings, layers, final norm): the vocabulary head at the
  answer positions, the losses, the λ policy and the optimizer stay eager, since their shapes
  follow the batch's answer tokens and a policy may keep state on the host.
- Steps that back-propagate through one forward more than once (the split-gradient policies,
  grad_conflict and meta-λ, on the steps they ask for it) and every forward outside training mode
  (evaluation, meta-λ's dev gradient) run the eager decoder: a recorded backward frees its saved
  activations as it goes, so it can be replayed once per forward only.
- All graphs of a trial record into one memory pool, and the pool's blocks stay reserved for those
  graphs between replays (the forward writes and the backward reads its activations at fixed
  addresses), so the pool grows with every bucket recorded: on one H100, seven buckets of 8 rows of
  the 3B model held 16–19 GB and two trials sharing the GPU ran out of memory (study run 7). What
  the recordings keep *allocated* is far less (0.5–0.6 GB for three buckets in run 8); both are
  reported (`held`, `reserved_growth`). The graphs therefore get a byte budget (`max_bytes`,
  what the trial's GPU share leaves beside a worst-case eager step: trainables/memory_plan.py):
  a batch whose bucket would overflow it steps eagerly, padded the same. Buckets are recorded as
  they first come, so the common ones, which come first, are the ones recorded. The graphs stay
  recorded through the evaluations between steps and are released (`release`) before the last.

Packing (Llama-like decoders, whose layers run directly): a batch's rows are laid end to end in
one row, padded to the next multiple of `PACK_BUCKET` tokens, each example with its own positions
(0, 1, …) and a segment id; attention is causal within a segment (a block-diagonal causal mask
built inside the graph from the segment ids). Every real token attends to exactly the tokens of
its own example before it, at the same rotary positions, so its hidden state is that of the masked
forward. What it saves: the study's batches mix 70-token classification prompts with 500-token QA
contexts, and a right-padded batch is as wide as its longest row; on the study's data (8 rows of the
XTREME sample, 128,256-token BPE) padded rows ran 2.45× the real tokens, packed rows 1.08×.

Off the GPU the same padding and unmasked forward run eagerly (`capture=False`), which is what the
CPU tests check against the masked forward.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: Padded lengths are multiples of this many tokens (≤ max_student_len / 64 graphs per trial).
BUCKET = 64
#: A packed batch's length is a multiple of this many tokens. Each length a trial meets is one
#: recording (~1.5 s at 3B in study runs 12–14, 7–8 a trial), against a step's ~0.07 s: on the
#: study's data (`bench/pack_lengths.py`) 200 steps meet 4 lengths at 1.16× the real tokens with 256,
#: 8 at 1.08× with 128 (1,000 steps: 6 against 10), so the wider bucket records half as often for
#: ~7% more tokens a step.
PACK_BUCKET = 256
#: Eager forward+backward passes before a trial's first capture (cuBLAS workspaces, lazy
#: initialisation), and before each later one, whose new shapes only need their own kernels chosen.
#: Each pass is a launch-bound eager step (~0.2–0.3 s at 3B); study runs 12–14 recorded 7–8 packed
#: lengths a trial in 11–14 s.
WARMUP_PASSES = 2
LATER_WARMUP_PASSES = 1


def train_graphs_enabled(cuda_graphs: bool, device_type: str, world: int, compiled: bool) -> bool:
    """Whether a trial records its decoder passes: asked for, on a GPU, one worker, layers not compiled."""
    return cuda_graphs and device_type == "cuda" and world == 1 and not compiled


#: Attention implementations that apply the causal mask themselves when given none (`is_causal`).
CAUSAL_WITHOUT_MASK = ("sdpa", "flash_attention_2", "flash_attention_3")


def runs_layers_directly(decoder: nn.Module) -> bool:
    """Whether the decoder is Llama-like (embeddings, rotary table, layers, norm) with an attention
    that is causal without a mask: its layers can then be called without building any mask."""
    parts = all(hasattr(decoder, a) for a in ("embed_tokens", "rotary_emb", "layers", "norm"))
    return parts and getattr(decoder.config, "_attn_implementation", None) in CAUSAL_WITHOUT_MASK


def _allocated() -> int:
    """Bytes allocated on the current CUDA device (0 without CUDA)."""
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def _reserved() -> int:
    """Bytes the caching allocator holds on the current CUDA device (0 without CUDA)."""
    return torch.cuda.memory_reserved() if torch.cuda.is_available() else 0


class _DecoderBody(nn.Module):
    """The decoder as a function of (input_ids, position_ids) alone: causal attention, no mask.

    Llama-like decoders run their layers directly: transformers' mask preparation reads tensor
    values on the host (a padding or packed-sequence check), which a CUDA graph capture refuses;
    without a mask the attention is SDPA's causal kernel. Other decoders are called whole."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.direct = runs_layers_directly(decoder)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                segments: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [B, T, H]; with `segments` [B, T], attention stays within a segment."""
        d = self.decoder
        if not self.direct:
            return d(input_ids=input_ids, attention_mask=None, use_cache=False).last_hidden_state
        mask = None
        if segments is not None:  # block-diagonal causal: same segment, key not after query
            width = segments.shape[-1]
            causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril_()
            mask = (segments[:, None, :, None] == segments[:, None, None, :]) & causal
        hidden = d.embed_tokens(input_ids)
        rotary = d.rotary_emb(hidden, position_ids=position_ids)
        for layer in d.layers[: d.config.num_hidden_layers]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
        return d.norm(hidden)


@dataclass(frozen=True)
class Packing:
    """Where a right-padded batch's real tokens go in one packed row of `width` tokens (host tensors).

    index [total]: each real token's flat position in the [B, T] batch, in row order; positions and
    segments [width]: each packed token's position within its example and its example's row (pads:
    positions 0, 1, … and segment B, their own); offsets [B]: where each row starts in the pack."""

    index: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor
    offsets: torch.Tensor
    width: int

    @property
    def total(self) -> int:
        """Real tokens packed."""
        return int(self.index.numel())


def packing(lengths: list[int], row_width: int, bucket: int = PACK_BUCKET) -> Packing:
    """The packing of a right-padded batch whose rows hold `lengths` real tokens of `row_width` columns."""
    total = sum(lengths)
    width = max(bucket, -(-total // bucket) * bucket)
    index = torch.cat([torch.arange(n) + b * row_width for b, n in enumerate(lengths)] or [torch.zeros(0, dtype=torch.long)])
    positions = torch.cat([torch.arange(n) for n in lengths] + [torch.arange(width - total)])
    segments = torch.cat([torch.full((n,), b) for b, n in enumerate(lengths)] + [torch.full((width - total,), len(lengths))])
    offsets = torch.tensor([0, *itertools.accumulate(lengths)][:-1], dtype=torch.long)
    return Packing(index, positions, segments, offsets, width)


class DecoderGraphs:
    """The decoder's training forward and backward, one recorded graph per shape: `answer_hidden`
    packs a batch's rows into one (Llama-like decoders; one graph per packed length) or pads them
    (others: `__call__`, one graph per (batch rows, padded length))."""

    def __init__(self, decoder: nn.Module, pad_id: int, bucket: int = BUCKET, capture: bool = True,
                 max_bytes: int | None = None, token_bytes: int = 0) -> None:
        self.decoder, self.pad_id, self.bucket, self.capture = decoder, pad_id, bucket, capture
        self.pool: Any = None  # the graphs' shared memory pool, made at the first recording
        self.graphs: dict[tuple[int, int], tuple[Any, torch.Tensor, torch.Tensor]] = {}
        #: Most bytes the recorded graphs may hold (None: no limit) and the bytes one padded token's
        #: recording is expected to hold (the plan's figure, raised to what recordings measure).
        self.max_bytes, self.token_bytes = max_bytes, token_bytes
        self.held = 0  # bytes the recorded graphs keep allocated now (measured at each recording)
        #: Bytes the allocator reserved more during the recordings since the last release: the graphs'
        #: pool, whose freed blocks only its graphs may reuse, and any growth of the eager warm-ups' cache.
        self.reserved_growth = 0
        self.over_budget: dict[tuple[int, int], tuple[Any, torch.Tensor, torch.Tensor]] = {}  # eager buckets
        self.over_budget_steps = 0  # passes that ran eagerly because their bucket did not fit the budget
        self.record_s = 0.0  # seconds spent warming up and recording, all buckets
        self.recorded = 0  # buckets recorded, releases included
        self.off_reason: str | None = None  # why recording failed and the passes run eagerly
        self.packs = runs_layers_directly(decoder)  # rows packed end to end (see the module's docstring)

    def padded_length(self, length: int) -> int:
        """The bucket a batch of this length is padded to."""
        return -(-length // self.bucket) * self.bucket

    def answer_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
        """Hidden states [N, H] at positions (rows, cols) of a right-padded batch [B, T]."""
        if not self.packs:
            return self(input_ids)[rows, cols]
        lengths = attention_mask.sum(-1).tolist()  # the one host read: the pack's layout depends on it
        p = packing(lengths, input_ids.shape[1])
        fn, ids, positions, segments = self._entry((1, p.width), input_ids, packed=True)
        device = input_ids.device
        ids[0, :p.total].copy_(input_ids.reshape(-1)[p.index.to(device, non_blocking=True)])
        ids[0, p.total:].fill_(self.pad_id)
        positions[0].copy_(p.positions, non_blocking=True)
        segments[0].copy_(p.segments, non_blocking=True)
        hidden = fn(ids, positions, segments)[0]
        return hidden[p.offsets.to(device, non_blocking=True)[rows] + cols]

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, H] of a right-padded batch [B, T], through its bucket's graph (unpacked)."""
        rows, length = input_ids.shape
        fn, ids, positions, _ = self._entry((rows, self.padded_length(length)), input_ids, packed=False)
        ids[:, :length].copy_(input_ids)
        ids[:, length:].fill_(self.pad_id)
        return fn(ids, positions)[:, :length]

    def _entry(self, key: tuple[int, int], like: torch.Tensor, packed: bool) -> tuple[Any, ...]:
        """The recorded (or over-budget eager) pass of this (rows, width), recorded when first needed."""
        entry = self.graphs.get(key) or self.over_budget.get(key) or self._record(*key, like, packed)
        if key in self.over_budget:
            self.over_budget_steps += 1
        return entry

    def _record(self, rows: int, width: int, like: torch.Tensor, packed: bool) -> tuple[Any, ...]:
        """Record (or, without capture, set up) the graphs of one bucket: (pass, its static inputs)."""
        t0 = time.perf_counter()
        ids = torch.full((rows, width), self.pad_id, dtype=like.dtype, device=like.device)
        positions = torch.arange(width, device=like.device).expand(rows, width).contiguous()
        segments = torch.zeros((rows, width), dtype=torch.long, device=like.device) if packed else None
        inputs = (ids, positions, segments) if packed else (ids, positions)
        body = _DecoderBody(self.decoder)
        if self.capture and not self.fits(rows * width):
            self.over_budget[(rows, width)] = entry = (body, ids, positions, segments)
            return entry
        before, before_reserved = _allocated(), _reserved()
        if self.capture:
            try:
                if self.pool is None:
                    self.pool = torch.cuda.graph_pool_handle()
                warmups = WARMUP_PASSES if self.recorded == 0 else LATER_WARMUP_PASSES
                body = torch.cuda.make_graphed_callables(body, inputs, num_warmup_iters=warmups, pool=self.pool)
            except Exception as err:  # noqa: BLE001 - any capture failure: this trial steps eagerly
                self.off_reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                print(f"training: CUDA graphs off for this trial ({self.off_reason}); steps run eagerly", flush=True)
                self.capture = False
                self.graphs.clear()
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                body = _DecoderBody(self.decoder)
        self.graphs[(rows, width)] = entry = (body, ids, positions, segments)
        if self.capture:  # what this bucket's graphs keep: static inputs, outputs, saved activations
            used = max(0, _allocated() - before)
            self.held += used
            self.reserved_growth += max(0, _reserved() - before_reserved)
            self.token_bytes = max(self.token_bytes, used // (rows * width))
        self.record_s += time.perf_counter() - t0
        self.recorded += 1
        return entry

    def fits(self, tokens: int) -> bool:
        """Whether a bucket of this many padded tokens may be recorded within the byte budget."""
        return self.max_bytes is None or self.held + tokens * self.token_bytes <= self.max_bytes

    def release(self) -> None:
        """Drop every recorded graph and give their memory pool back to the device."""
        self.over_budget.clear()
        self.held = self.reserved_growth = 0
        if not self.graphs:
            return
        self.graphs.clear()
        if self.capture:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self.pool = None

    @property
    def shapes(self) -> int:
        """How many (rows, padded length) graphs are recorded now."""
        return len(self.graphs)

"""Greedy decoding for evaluation: length-sorted batches sized by a memory budget, a KV cache,
vocabulary logits only at the last position, and each batch stopped as soon as every sequence
has ended (EOS or a token that contains a stop string).

Why not `model.generate`: on a 3B model it computed a step in ~70 ms whatever the batch, ran
every batch to its token budget, and its batch was a fixed 32 (issue 11). Here the batch is as
large as the memory budget allows, so the launch-bound decoding step is shared by hundreds of
sequences, and the per-step stop check costs no host sync except every `SYNC_EVERY` steps.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from trainables.decode_attention import decoding_attention
from trainables.kv_cache import ALIGN, StaticKV, attention_heads, cache_len, decode_mask, prefill_mask
from trainables.models import causal_lm

#: Steps between two checks of "has every sequence ended?" (each check is one host sync).
SYNC_EVERY = 4
#: A batch holds prompts at least this fraction of its longest one's length: padding stays
#: bounded (one 2,948-token MLQA prompt once padded a batch of ~300-token prompts to its width).
MIN_LENGTH_RATIO = 0.5


@dataclass
class GenerationStats:
    """What one `greedy_generate` call did: sequences, batches, generated and prompt tokens."""

    sequences: int = 0
    batches: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    decode_steps: int = 0
    #: Sets of decoding tensors built (on CUDA with graphs, each records its step once); the
    #: other batches reused the tensors and recorded step of the batch before them.
    decoders: int = 0

    def add(self, other: "GenerationStats") -> None:
        """Accumulate another call's counts."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes of KV cache one token takes in every layer of a decoder with this config."""
    _, kv_heads, head_dim = attention_heads(config)
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def prefill_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Transient bytes one prompt token needs during the prefill of one layer (activations, MLP)."""
    size = torch.empty((), dtype=dtype).element_size()
    return size * (4 * config.hidden_size + 3 * config.intermediate_size)


def batch_size_for(config: Any, dtype: torch.dtype, prompt_len: int, max_new_tokens: int, budget_bytes: int,
                   cap: int, attention_area: int | None = None) -> int:
    """How many sequences of this prompt length fit in `budget_bytes` (KV cache + prefill), ≤ cap,
    and, with `attention_area`, with rows × width² ≤ attention_area (width: prompt + new tokens)."""
    width = prompt_len + max_new_tokens
    length = cache_len(prompt_len, max_new_tokens)
    size = torch.empty((), dtype=dtype).element_size()
    heads, _, head_dim = attention_heads(config)
    per_seq = (kv_bytes_per_token(config, dtype) * length
               + prefill_bytes_per_token(config, dtype) * prompt_len
               + size * prompt_len * length  # the prefill's additive mask
               + 2 * size * heads * head_dim * length  # one layer's keys/values per query head
               + 4 * config.vocab_size)  # the last position's fp32 logits
    rows = min(cap, budget_bytes // max(1, per_seq))
    if attention_area is not None:
        rows = min(rows, attention_area // (width * width))
    return max(1, rows)


@dataclass(frozen=True)
class EndTables:
    """Per-token lookup tables [V] (bool) that decide when a sequence has ended.

    `eos`: the token ends the sequence. `stop`: its text contains a stop string, which ends the
    sequence once it has content. `content`: its text is not whitespace only (so a leading blank
    line, which models often emit first, does not end the answer before it starts)."""

    eos: torch.Tensor
    stop: torch.Tensor
    content: torch.Tensor

    def to(self, device: torch.device) -> "EndTables":
        """The tables on `device`."""
        return EndTables(self.eos.to(device), self.stop.to(device), self.content.to(device))


@functools.lru_cache(maxsize=8)
def _token_texts(tokenizer: Any, n: int) -> tuple[str, ...]:
    """The text of each of the first n token ids on its own ('' beyond the tokenizer)."""
    known = min(n, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(known)])
    return tuple(texts) + ("",) * (n - known)


def end_tables(tokenizer: Any, model: nn.Module, stops: Sequence[str]) -> EndTables:
    """The end tables for this tokenizer, model (its EOS ids) and stop strings."""
    lm = causal_lm(model)
    n = max(lm.config.vocab_size, len(tokenizer))
    eos = torch.zeros(n, dtype=torch.bool)
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    ids.update([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or []))
    eos[sorted(i for i in ids if 0 <= i < n)] = True
    texts = _token_texts(tokenizer, n)
    stop = torch.tensor([any(s in t for s in stops) for t in texts], dtype=torch.bool)
    content = torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool)
    return EndTables(eos, stop, content)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop string that follows its first non-whitespace character."""
    lead = len(text) - len(text.lstrip())
    cut = len(text)
    for s in stops:
        at = text.find(s, lead)
        if at >= 0:
            cut = min(cut, at)
    return text[:cut]


@functools.lru_cache(maxsize=4)
def _cache_kwarg(forward: Any) -> str:
    """The forward argument that takes the KV cache ('cache' since transformers 5.2x, else
    'past_key_values')."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


#: Why CUDA graphs are off in this process (set by the first failed capture), or None.
_graphs_off: str | None = None


def graphs_off_reason() -> str | None:
    """Why decoding steps in this process run without CUDA graphs (None: they use them on CUDA)."""
    return _graphs_off


class _Decoder:
    """Decoding state for up to `rows` sequences in fixed tensors, and the step that advances it.

    `step()` feeds the last token, writes the next one at step t and updates which sequences have
    ended; every tensor it touches keeps its address, so on CUDA the step is recorded once as a
    graph and replayed (launching ~2,000 kernels per step from Python cost ~70 ms on a 3B model).
    The same tensors then serve the next batch that fits them (`load`): fewer rows (the rest are
    idle rows, ended from the start), a narrower cache (columns beyond it stay hidden), a smaller
    token budget. Nothing from the earlier batch is visible to the next: the prefill rewrites the
    prompt columns and the mask hides every column until it is written again."""

    def __init__(self, lm: nn.Module, rows: int, length: int, max_new_tokens: int, pad_id: int,
                 tables: EndTables, device: torch.device) -> None:
        dtype = next(lm.parameters()).dtype
        self.lm, self.tables, self.pad_id, self.key = lm, tables, pad_id, _cache_kwarg(type(lm).forward)
        self.rows, self.length, self.max_new = rows, length, max_new_tokens
        self.device, self.dtype = device, dtype
        self.kv = StaticKV(lm.config, rows, length, dtype, device)
        self.mask = torch.zeros(rows, 1, 1, length, dtype=dtype, device=device)
        self.pos = torch.zeros(rows, 1, dtype=torch.long, device=device)
        self.inp = torch.full((rows, 1), pad_id, dtype=torch.long, device=device)
        self.t = torch.zeros(1, dtype=torch.long, device=device)
        self.out = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
        #: Each row's own token budget: a row ends when it has generated that many tokens.
        self.limit = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.started = torch.zeros_like(self.done)
        self.ids = self.padding = torch.empty(0)

    def nbytes(self) -> int:
        """Bytes these tensors take (the KV cache, mostly)."""
        tensors = [*self.kv.keys, *self.kv.values, self.mask, self.pos, self.inp, self.out, self.lengths, self.limit]
        return sum(t.numel() * t.element_size() for t in tensors)

    def fits(self, rows: int, length: int, max_new_tokens: int) -> bool:
        """Whether a batch of `rows` sequences needing `length` columns fits these tensors with
        bounded waste (at most about twice the rows and twice the columns it needs)."""
        return (rows <= self.rows <= 2 * rows + ALIGN and length <= self.length <= 2 * length
                and max_new_tokens <= self.max_new)

    def load(self, prompts: Sequence[Sequence[int]], budgets: Sequence[int]) -> None:
        """Make a new batch of prompts (left-padded to their longest), each with its own token
        budget, the decoding state, in place."""
        b, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        padding = torch.ones(b, width, dtype=torch.bool)
        for row, p in enumerate(prompts):  # left padding: every prompt ends at the last column
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            padding[row, width - len(p):] = False
        self.ids, self.padding = ids.to(self.device), padding.to(self.device)
        # Idle rows (beyond the batch) see no prompt column: each step shows them their own token.
        idle = torch.ones(self.rows, width, dtype=torch.bool, device=self.device)
        idle[:b] = self.padding
        self.mask.copy_(decode_mask(idle, self.length, self.dtype))
        self.pos.zero_()
        self.t.zero_()
        self.out.fill_(self.pad_id)
        self.limit.fill_(1)  # idle rows: ended from the start anyway
        self.limit[:b].copy_(torch.tensor(list(budgets), dtype=torch.long))
        self.lengths.copy_(self.limit)
        self.done.fill_(True)
        self.done[:b] = False
        self.started.zero_()

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                       **{self.key: self.kv}).logits[:, -1]

    def _record(self, logits: torch.Tensor) -> None:
        """Write the greedy token at step t, mark the sequences it ends, and advance t."""
        tables, nxt = self.tables, logits.argmax(-1)
        if nxt.shape[0] < self.rows:  # the prefill of a batch smaller than the tensors: idle rows get padding
            nxt = torch.cat([nxt, nxt.new_full((self.rows - nxt.shape[0],), self.pad_id)])
        self.out.index_copy_(1, self.t, torch.where(self.done, self.pad_id, nxt)[:, None])
        self.started.logical_or_(tables.content[nxt])
        ends_now = ~self.done & (tables.eos[nxt] | (tables.stop[nxt] & self.started) | (self.t + 1 >= self.limit))
        self.lengths.copy_(torch.where(ends_now, self.t + 1, self.lengths))
        self.done.logical_or_(ends_now)
        self.inp.copy_(nxt[:, None])
        self.t.add_(1)

    def prefill(self) -> None:
        """The loaded prompts' forward: fills columns [0, W) of their rows and records step 0."""
        b, width = self.ids.shape
        # The [B, 1, W, L] prefill mask lives only for this forward, not through the decoding steps.
        mask = prefill_mask(self.padding, self.length, self.dtype)
        pos = (~self.padding).long().cumsum(-1) - 1
        self.kv.rows = b
        try:
            self._record(self._forward(self.ids, mask, pos.clamp(min=0)))
        finally:
            self.kv.rows = None
        self.kv.seen = width
        self.kv.column.fill_(width)
        self.pos[:b].copy_(pos[:, -1:] + 1)

    def step(self) -> None:
        """One decoding step: the last token at its column and position, then the next token."""
        self.mask.index_fill_(-1, self.kv.column, 0.0)
        self._record(self._forward(self.inp, self.mask, self.pos))
        self.pos.add_(1)
        self.kv.column.add_(1)


class _StepRunner:
    """Runs `step` eagerly, or on CUDA: once eagerly on a side stream (warm-up), then recorded as a
    CUDA graph and replayed from then on; a failed capture turns graphs off for the process, with
    its reason."""

    def __init__(self, step: Any, device: torch.device, graphs: bool = True) -> None:
        self.step, self.calls, self.graph = step, 0, None
        self.capture = graphs and device.type == "cuda" and _graphs_off is None

    def __call__(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture:
            self.step()
        elif self.calls == 1:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self.graph = self._record()
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()

    def _record(self) -> Any:
        global _graphs_off
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step()  # recorded, not run
        except Exception as err:  # an op that syncs with the host, or a kernel that cannot be captured
            _graphs_off = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"generation: CUDA graphs off for this process ({_graphs_off}); decoding steps run eagerly",
                  flush=True)
            self.capture = False
            return None
        return graph


class DecodeSession:
    """The decoding tensors and recorded step of the last batch, kept for the next batch that fits
    them (`_Decoder.fits`): a batch that reuses them skips the allocation, the eager warm-up step
    and the graph capture. One session serves one model state (its weights must not change while
    the session is open: the recorded step reads them by address); `close()` frees everything."""

    def __init__(self, lm: nn.Module, pad_id: int, tables: EndTables, device: torch.device, graphs: bool = True,
                 grouped: bool = True, reuse: bool = True) -> None:
        self.lm, self.pad_id, self.tables, self.device = lm, pad_id, tables, device
        self.graphs, self.grouped, self.reuse = graphs, grouped, reuse
        self.decoder: _Decoder | None = None
        self.runner: _StepRunner | None = None
        #: Decoding tensors built (each new set on CUDA also records its step once).
        self.builds = 0

    def held_bytes(self) -> int:
        """Bytes the kept tensors take (given back before a batch that does not fit them)."""
        return self.decoder.nbytes() if self.decoder is not None else 0

    def decoder_for(self, rows: int, length: int, max_new_tokens: int) -> tuple[_Decoder, _StepRunner]:
        """Tensors (and step runner) for a batch of this size: the kept ones if it fits them, else new."""
        if self.decoder is None or self.runner is None or not (
                self.reuse and self.decoder.fits(rows, length, max_new_tokens)):
            self.close()  # the old KV cache goes back before the new one is allocated
            self.decoder = _Decoder(self.lm, rows, length, max_new_tokens, self.pad_id, self.tables, self.device)
            self.runner = _StepRunner(self.decoder.step, self.device, self.graphs)
            self.builds += 1
        return self.decoder, self.runner

    def close(self) -> None:
        """Free the kept tensors and the recorded step (its memory pool goes back to the allocator)."""
        self.decoder = self.runner = None


@torch.no_grad()
def _decode_batch(lm: nn.Module, prompts: Sequence[Sequence[int]], budgets: Sequence[int],
                  session: DecodeSession) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Greedy continuation ids [B, steps], each sequence's length (its end token included) [B],
    and the number of decoding steps run, on the session's tensors (on CUDA with graphs, steps
    replay its recorded step; with grouped attention, decoding reads the grouped KV heads as stored).
    Sequence i generates at most budgets[i] tokens; the batch stops when every sequence has ended."""
    width, max_new_tokens = max(len(p) for p in prompts), max(budgets)
    dec, run = session.decoder_for(len(prompts), cache_len(width, max_new_tokens), max_new_tokens)
    dec.load(prompts, budgets)
    with decoding_attention(lm, session.grouped):
        dec.prefill()
        steps = 1
        while steps < max_new_tokens and not (steps % SYNC_EVERY == 0 and bool(dec.done.all())):
            run()
            steps += 1
    b = len(prompts)
    return dec.out[:b, :steps].clone(), dec.lengths[:b].clamp(max=steps), steps


def greedy_generate(model: nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]],
                    max_new_tokens: int | Sequence[int], device: torch.device, budget_bytes: int, max_batch: int,
                    stops: Sequence[str] = (), attention_area: int | None = None,
                    cuda_graphs: bool = True, grouped_attention: bool = True,
                    session: DecodeSession | None = None) -> tuple[list[str], GenerationStats]:
    """Greedy continuations of token-id prompts, in order, cut at the first stop string.

    `max_new_tokens` is one token budget for every prompt, or one per prompt (prompts of several
    tasks decoded together, each within its own task's budget). Prompts are sorted by length and batched so that each batch's KV cache and prefill fit in
    `budget_bytes` (at most `max_batch` sequences, none shorter than MIN_LENGTH_RATIO of the
    batch's longest); a batch ends when all its sequences have
    produced an end token (EOS, or a token containing a stop string) or the token budget.
    On the CPU, `attention_area` also bounds rows × width² of a batch: eager attention there
    materialises every score (long real MLQA prompts once made 13 GB trials).
    With `session` (from `open_session`, same model, tokenizer and stops), batches reuse decoding
    tensors and recorded steps across calls; without, the call opens and closes its own."""
    lm = causal_lm(model)
    dtype = next(lm.parameters()).dtype
    own = session is None
    if session is None:
        session = open_session(model, tokenizer, stops, device, cuda_graphs, grouped_attention)
    budgets = ([max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens))
    if len(budgets) != len(prompts) or min(budgets, default=1) < 1:
        raise ValueError(f"max_new_tokens: one budget ≥ 1, or one per prompt ({len(prompts)}), got {max_new_tokens}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    texts: list[str] = [""] * len(prompts)
    stats = GenerationStats()
    builds = session.builds
    start = 0
    try:
        while start < len(order):
            # The longest prompt left sets the batch's size: later batches have shorter prompts.
            area = attention_area if device.type == "cpu" else None
            longest = len(prompts[order[start]])
            # Sized for the largest budget left (a batch's cache holds its largest budget's columns).
            most_new = max(budgets[i] for i in order[start:])
            size = batch_size_for(lm.config, dtype, longest, most_new, budget_bytes, max_batch, area)
            idx = [i for i in order[start:start + size] if len(prompts[i]) >= MIN_LENGTH_RATIO * longest]
            start += len(idx)
            gen, lengths, steps = _decode_batch(lm, [prompts[i] for i in idx], [budgets[i] for i in idx], session)
            for row, n, i in zip(gen.tolist(), lengths.tolist(), idx):
                texts[i] = cut_at_stop(tokenizer.decode(row[:n], skip_special_tokens=True), stops)
                stats.generated_tokens += n
            stats.sequences += len(idx)
            stats.batches += 1
            stats.decode_steps += steps
            stats.prompt_tokens += sum(len(prompts[i]) for i in idx)
    finally:
        stats.decoders = session.builds - builds
        if own:
            session.close()
    return texts, stats


def open_session(model: nn.Module, tokenizer: Any, stops: Sequence[str], device: torch.device,
                 cuda_graphs: bool = True, grouped_attention: bool = True, reuse: bool = True) -> DecodeSession:
    """A decoding session for this model, tokenizer and stop strings (see `DecodeSession`)."""
    tables = end_tables(tokenizer, model, tuple(stops)).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DecodeSession(causal_lm(model), pad, tables, device, cuda_graphs, grouped_attention, reuse)

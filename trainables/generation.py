"""Greedy decoding for evaluation: length-sorted prompts streamed through decoding rows sized by a
memory budget (continuous batching), a KV cache, vocabulary logits only at the last position,
and each sequence ended at EOS, a token that contains a stop string, or its own token budget.

Why not `model.generate`: on a 3B model it computed a step in ~70 ms whatever the batch, ran
every batch to its token budget, and its batch was a fixed 32 (issue 11). Here the rows are as
many as the memory budget allows, so the launch-bound decoding step (a recorded CUDA graph) is
shared by hundreds of sequences; a row whose sequence has ended takes the next prompt instead of
waiting for the longest answer of its batch (study run 8: batches of classification and tagging
answers ran ~150 steps for ~22 generated tokens a row); and the stop check costs no host sync
except every `SYNC_EVERY` steps.
"""

from __future__ import annotations

import functools
import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from trainables.decode_attention import decoding_attention
from trainables.kv_cache import ALIGN, StaticKV, attention_heads, cache_len, decode_mask, prefill_mask
from trainables.models import causal_lm
from trainables.shared_prefix import PrefixKV, prefixes_kv, shared_prefixes

T = TypeVar("T")

#: Steps between two checks of "has every sequence ended?" (each check is one host sync).
SYNC_EVERY = 4
#: A group holds prompts at least this fraction of its longest one's length: the KV cache's width
#: stays bounded (one 2,948-token MLQA prompt once padded a batch of ~300-token prompts to its width).
MIN_LENGTH_RATIO = 0.5


@dataclass
class GenerationStats:
    """What one `greedy_generate` call did: sequences, admissions, generated and prompt tokens."""

    sequences: int = 0
    #: Prefill forwards: prompts admitted into free rows together (see `_decode_stream`).
    batches: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    #: Tokens the prefill forwards ran: each one's prompts × its longest past their shared prefix
    #: (left padding included), and each shared prefix once.
    prefill_tokens: int = 0
    decode_steps: int = 0
    #: Sets of decoding tensors built (on CUDA with graphs, each records its step once); the
    #: other streams reused the tensors and recorded step of the stream before them.
    decoders: int = 0
    #: Seconds of the prefill forwards, and of the rest of the streams (decoding steps, their host
    #: reads, admissions' bookkeeping), on the device's clock (CUDA events; the host's on the CPU).
    prefill_s: float = 0.0
    decode_s: float = 0.0
    #: Prompt tokens whose keys and values came from a shared prefix, prefilled once per call
    #: (`trainables.shared_prefix`; its own forwards are counted in `prefill_tokens`).
    prefix_tokens: int = 0
    #: KV-cache cells the decoding steps attended over: each step's rows × cache columns (what a
    #: step reads, ended rows and unused columns included; a proxy for its memory traffic).
    kv_reads: int = 0

    def add(self, other: "GenerationStats") -> None:
        """Accumulate another call's counts."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class SpanClock:
    """Seconds spent inside marked spans, by name, on the device's own clock: CUDA events recorded
    around each span and read once at the end (no host sync while decoding), or the host's clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: dict[str, list[tuple[Any, Any]]] = {}
        self.host: dict[str, float] = {}

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Time the block under `name` (spans of one name add up)."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self.events.setdefault(name, []).append((start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.host[name] = self.host.get(name, 0.0) + time.perf_counter() - t0

    def seconds(self, name: str) -> float:
        """Total seconds of the spans named `name` so far (waits for their last event on CUDA)."""
        pairs = self.events.get(name, [])
        if pairs:
            pairs[-1][1].synchronize()
        return sum(a.elapsed_time(b) for a, b in pairs) / 1000 + self.host.get(name, 0.0)


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
    """Decoding state for `rows` sequences in fixed tensors, each row holding its own sequence, and
    the step that advances every row at once.

    Rows are filled and refilled independently (`admit`): a row's prompt occupies columns [0, W) of
    its cache row (W: the width of the prompts admitted with it, left-padded), and its generated
    token t ≥ 1 goes to its own column W + t - 1. So a row whose sequence has ended can take the
    next prompt while the others keep decoding (continuous batching): decoding steps carry
    sequences that still generate, not rows that wait for the batch's longest answer.

    `step()` feeds each row's last token at its column, writes the next token and updates which
    sequences have ended; every tensor it touches keeps its address, so on CUDA the step is
    recorded once as a graph and replayed (launching ~2,000 kernels per step from Python cost
    ~70 ms on a 3B model). Rows without a live sequence run along and change nothing that a live
    sequence can see. The same tensors then serve the next stream of prompts that fits them
    (`reset`, then `admit`): fewer rows, a narrower cache (columns beyond it stay hidden), a
    smaller token budget."""

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
        #: Tokens each row has generated (the column of `out` its next token goes to).
        self.t = torch.zeros(rows, dtype=torch.long, device=device)
        # One spare column: an ended row keeps writing padding just past its last token.
        self.out = torch.full((rows, max_new_tokens + 1), pad_id, dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        #: Each row's own token budget: a row ends when it has generated that many tokens.
        self.limit = torch.ones(rows, dtype=torch.long, device=device)
        self.done = torch.ones(rows, dtype=torch.bool, device=device)
        self.started = torch.zeros_like(self.done)
        self.every_row = torch.arange(rows, device=device)
        self.reset()

    def nbytes(self) -> int:
        """Bytes these tensors take (the KV cache, mostly)."""
        tensors = [*self.kv.keys, *self.kv.values, self.mask, self.pos, self.inp, self.out, self.lengths, self.limit]
        return sum(t.numel() * t.element_size() for t in tensors)

    def fits(self, rows: int, length: int, max_new_tokens: int) -> bool:
        """Whether `rows` sequences needing `length` columns fit these tensors with bounded waste
        (at most about twice the rows and twice the columns they need)."""
        return (rows <= self.rows <= 2 * rows + ALIGN and length <= self.length <= 2 * length
                and max_new_tokens <= self.max_new)

    def reset(self) -> None:
        """Every row empty: ended, seeing no column, writing column 0."""
        self.done.fill_(True)
        self.mask.fill_(torch.finfo(self.dtype).min)
        self.kv.columns.zero_()
        self.pos.zero_()
        self.t.zero_()
        self.lengths.zero_()

    def admit(self, rows: Sequence[int], prompts: Sequence[Sequence[int]], budgets: Sequence[int],
              prefix: PrefixKV | None = None) -> None:
        """Start these prompts (left-padded to their longest) in these rows, each within its own
        token budget: their prefill fills the rows' prompt columns and records their first token.

        With `prefix` (every prompt starts with its tokens), the prefix's keys and values fill
        columns [0, P) and only the prompts' own tokens are prefilled, left-padded after it."""
        shared = len(prefix) if prefix is not None else 0
        own = [p[shared:] for p in prompts]
        n, width = len(own), max(len(p) for p in own)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        padding = torch.ones(n, shared + width, dtype=torch.bool)
        padding[:, :shared] = False
        for i, p in enumerate(own):  # left padding: every prompt ends at the last column
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            padding[i, shared + width - len(p):] = False
        ids, padding = ids.to(self.device), padding.to(self.device)
        width += shared
        r = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        pos = (~padding).long().cumsum(-1) - 1
        self.kv.fill_rows, self.kv.prefix = r, prefix
        try:  # the prefill attends within its own prompts: a [n, 1, W - P, W] mask, only while it runs
            mask = prefill_mask(padding, width, self.dtype)[:, :, shared:]
            logits = self._forward(ids, mask, pos[:, shared:].clamp(min=0))
        finally:
            self.kv.fill_rows = self.kv.prefix = None
        self.mask.index_copy_(0, r, decode_mask(padding, self.length, self.dtype))
        self.kv.columns.index_fill_(0, r, width)
        self.pos.index_copy_(0, r, pos[:, -1:] + 1)
        self.out.index_fill_(0, r, self.pad_id)
        self.t.index_fill_(0, r, 0)
        self.limit.index_copy_(0, r, torch.tensor(list(budgets), dtype=torch.long, device=self.device))
        self.done.index_fill_(0, r, False)
        self.started.index_fill_(0, r, False)
        self._record(logits.argmax(-1), r)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                       **{self.key: self.kv}).logits[:, -1]

    def _record(self, nxt: torch.Tensor, r: torch.Tensor) -> None:
        """Take nxt[i] as the next token of row r[i] (live rows only), mark the sequences it ends."""
        tables, t, done = self.tables, self.t[r], self.done[r]
        live = ~done
        self.out.index_put_((r, t), torch.where(live, nxt, self.pad_id))
        started = self.started[r] | tables.content[nxt]
        ends = live & (tables.eos[nxt] | (tables.stop[nxt] & started) | (t + 1 >= self.limit[r]))
        self.started.index_copy_(0, r, started)
        self.lengths.index_copy_(0, r, torch.where(ends, t + 1, self.lengths[r]))
        self.done.index_copy_(0, r, done | ends)
        self.inp.index_copy_(0, r, nxt[:, None])
        self.t.index_copy_(0, r, t + live.long())

    def step(self) -> None:
        """One decoding step of every row: its last token at its own column and position, then the
        next token; rows whose sequence goes on advance their column and position."""
        columns = self.kv.columns
        self.mask.scatter_(-1, columns.view(-1, 1, 1, 1), 0.0)
        self._record(self._forward(self.inp, self.mask, self.pos).argmax(-1), self.every_row)
        going = (~self.done).long()
        columns.add_(going)
        self.pos.add_(going[:, None])


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
                 grouped: bool = True, reuse: bool = True, share_prefixes: bool = True) -> None:
        self.lm, self.pad_id, self.tables, self.device = lm, pad_id, tables, device
        self.graphs, self.grouped, self.reuse, self.share_prefixes = graphs, grouped, reuse, share_prefixes
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


#: One prefill holds prompts at least this fraction of its longest one's length: a stream's
#: admissions mix lengths (joined length groups, largest budgets first), and a prefill pads every
#: prompt to its longest (in one admission of a dev evaluation's joined stream, 2.8× the real tokens).
PREFILL_LENGTH_RATIO = 0.75
#: Rows refill once at least this fraction of them has no live sequence (or none has one): each
#: admission is one prefill forward, so admitting a few prompts at a time would cost a launch-bound
#: forward for little work.
REFILL_FRACTION = 0.25


@torch.no_grad()
def _decode_stream(lm: nn.Module, prompts: Sequence[Sequence[int]], budgets: Sequence[int], rows: int,
                   session: DecodeSession, stats: GenerationStats, clock: SpanClock | None = None,
                   prefixes: Sequence[PrefixKV | None] | None = None) -> list[list[int]]:
    """Each prompt's greedy continuation ids (its end token included), streamed through `rows`
    decoding rows: prompts are admitted in order, and rows whose sequence has ended take the next
    ones while the other rows go on decoding. Sequence i generates at most budgets[i] tokens.

    Every SYNC_EVERY steps the host reads which rows have ended (one sync): their ids are
    collected, and once REFILL_FRACTION of the rows is free the next prompts are admitted (a
    prefill forward per shared prefix and run of similar lengths). On CUDA with graphs, steps
    replay the session's recorded step. With `clock`, the prefills are timed as span 'prefill'.
    `prefixes[i]`: a prefilled prefix that prompt i starts with (None: it has none)."""
    clock = clock or SpanClock(torch.device("cpu"))
    width, max_new = max(len(p) for p in prompts), max(budgets)
    dec, run = session.decoder_for(rows, cache_len(width, max_new), max_new)
    dec.reset()
    holder: list[int | None] = [None] * dec.rows  # the prompt each row decodes
    out: list[list[int]] = [[] for _ in prompts]
    waiting = 0  # prompts[waiting:] are not admitted yet
    refill_at = max(1, int(REFILL_FRACTION * min(rows, len(prompts))))

    def admit(free: list[int]) -> None:
        nonlocal waiting
        take = free[:min(rows, len(prompts) - waiting)]  # at most `rows` prompts at once
        for prefix, part in _prefills(list(zip(take, range(waiting, waiting + len(take)))), prompts, prefixes):
            idx = [i for _, i in part]
            with clock.span("prefill"):
                dec.admit([row for row, _ in part], [prompts[i] for i in idx], [budgets[i] for i in idx], prefix)
            for row, i in part:
                holder[row] = i
            shared = len(prefix) if prefix is not None else 0
            stats.batches += 1
            stats.prompt_tokens += sum(len(prompts[i]) for i in idx)
            stats.prefill_tokens += len(idx) * (max(len(prompts[i]) for i in idx) - shared)
            stats.prefix_tokens += len(idx) * shared
        waiting += len(take)

    with decoding_attention(lm, session.grouped):
        admit(list(range(min(rows, len(prompts)))))
        steps = 1
        while True:
            if steps % SYNC_EVERY == 0:
                done = dec.done.tolist()
                ended = [row for row, i in enumerate(holder) if i is not None and done[row]]
                if ended:
                    got, lengths = dec.out[ended].tolist(), dec.lengths[ended].tolist()
                    for row, ids, n in zip(ended, got, lengths):
                        out[holder[row]] = ids[:n]  # type: ignore[index]
                        holder[row] = None
                free = [row for row, i in enumerate(holder) if i is None]
                if waiting < len(prompts) and (len(free) >= refill_at or len(free) == dec.rows):
                    admit(free)
                elif len(free) == dec.rows:
                    break
            run()
            stats.kv_reads += dec.rows * dec.length
            steps += 1
    stats.decode_steps += steps
    return out


def length_runs(items: Sequence[T], length: Callable[[T], int], ratio: float) -> list[list[T]]:
    """The items longest first, in runs none of whose items is shorter than `ratio` of its run's
    longest (ties keep the items' order)."""
    runs: list[list[T]] = []
    for item in sorted(items, key=lambda x: -length(x)):
        if not runs or length(item) < ratio * length(runs[-1][0]):
            runs.append([])
        runs[-1].append(item)
    return runs


def _prefills(pairs: list[tuple[int, int]], prompts: Sequence[Sequence[int]],
              prefixes: Sequence[PrefixKV | None] | None = None) -> list[tuple[PrefixKV | None, list[tuple[int, int]]]]:
    """(row, prompt index) pairs split into prefill forwards: one shared prefix each (or none), then
    runs of similar lengths past it, longest first, none shorter than PREFILL_LENGTH_RATIO of its
    run's longest (each pads to its longest)."""
    by_prefix: dict[int, tuple[PrefixKV | None, list[tuple[int, int]]]] = {}
    for pair in pairs:
        prefix = prefixes[pair[1]] if prefixes is not None else None
        by_prefix.setdefault(id(prefix), (prefix, []))[1].append(pair)
    out = []
    for prefix, part in by_prefix.values():
        shared = len(prefix) if prefix is not None else 0
        out += [(prefix, run) for run in length_runs(part, lambda pair: len(prompts[pair[1]]) - shared,
                                                     PREFILL_LENGTH_RATIO)]
    return out


def plan_streams(lengths: Sequence[int], budgets: Sequence[int],
                 rows_for: Callable[[int, int], int]) -> list[tuple[list[int], int]]:
    """The prompts' decoding streams, in order: each stream's prompt indices (in admission order)
    and its decoding rows. `rows_for(longest, most_new)` is how many rows fit the memory budget.

    Prompts sorted by length form groups none of whose prompts is shorter than MIN_LENGTH_RATIO of
    the group's longest. A group joins the stream before it (whose cache is wide enough for it)
    when that costs fewer decoding steps than a stream of its own, counting every answer at its
    budget (the worst case): n·ḡ/rows_joined against n·ḡ/rows_alone plus its own tail, its largest
    budget (a stream's last answers decode with few rows busy). Within a stream, prompts go
    largest budget first, then longest: the last admissions are the short answers."""
    groups = length_runs(range(len(lengths)), lengths.__getitem__, MIN_LENGTH_RATIO)
    streams: list[list[int]] = []
    for group in groups:
        work = sum(budgets[i] for i in group)  # tokens to decode at worst
        most = max(budgets[i] for i in group)
        alone = min(len(group), rows_for(lengths[group[0]], most))
        if streams:
            joined = streams[-1] + group
            rows = min(len(joined), rows_for(lengths[joined[0]], max(budgets[i] for i in joined)))
            if work / rows <= work / alone + most:
                streams[-1] = joined
                continue
        streams.append(group)
    planned = []
    for stream in streams:
        stream.sort(key=lambda i: -budgets[i])  # stable: longest first within a budget
        rows = min(len(stream), rows_for(max(lengths[i] for i in stream), max(budgets[i] for i in stream)))
        planned.append((stream, max(1, rows)))
    return planned


def prefill_shared_prefixes(lm: nn.Module, prompts: Sequence[Sequence[int]], device: torch.device,
                            stats: GenerationStats, clock: SpanClock) -> list[PrefixKV | None]:
    """Each prompt's shared prefix, prefilled once per group (`trainables.shared_prefix`), or None;
    the prefix forwards count as prefill tokens, and their time as span 'prefix' (outside the streams)."""
    groups = shared_prefixes(prompts)
    with clock.span("prefix"):
        kvs = prefixes_kv(lm, prompts, groups, _cache_kwarg(type(lm).forward), device)
    stats.prefill_tokens += sum(groups.lengths)
    return [kvs[g] if g >= 0 else None for g in groups.group]


def greedy_generate(model: nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]],
                    max_new_tokens: int | Sequence[int], device: torch.device, budget_bytes: int, max_batch: int,
                    stops: Sequence[str] = (), attention_area: int | None = None,
                    cuda_graphs: bool = True, grouped_attention: bool = True, share_prefixes: bool = True,
                    session: DecodeSession | None = None) -> tuple[list[str], GenerationStats]:
    """Greedy continuations of token-id prompts, in order, cut at the first stop string.

    `max_new_tokens` is one token budget for every prompt, or one per prompt (prompts of several
    tasks decoded together, each within its own task's budget). Prompts stream (`plan_streams`)
    through as many decoding rows as their KV cache and prefill fit in `budget_bytes` (at most
    `max_batch`): a sequence ends at an end token (EOS, or a token containing a stop string) or
    its budget, and its row takes the stream's next prompt. With `share_prefixes`, a prefix that
    several prompts start with is prefilled once (`trainables.shared_prefix`).
    On the CPU, `attention_area` also bounds rows × width² of a stream: eager attention there
    materialises every score (long real MLQA prompts once made 13 GB trials).
    With `session` (from `open_session`, same model, tokenizer and stops), streams reuse decoding
    tensors and recorded steps across calls; without, the call opens and closes its own."""
    lm = causal_lm(model)
    dtype = next(lm.parameters()).dtype
    own = session is None
    if session is None:
        session = open_session(model, tokenizer, stops, device, cuda_graphs, grouped_attention,
                               share_prefixes=share_prefixes)
    budgets = ([max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens))
    if len(budgets) != len(prompts) or min(budgets, default=1) < 1:
        raise ValueError(f"max_new_tokens: one budget ≥ 1, or one per prompt ({len(prompts)}), got {max_new_tokens}")
    area = attention_area if device.type == "cpu" else None
    texts: list[str] = [""] * len(prompts)
    stats = GenerationStats()
    clock = SpanClock(device)
    builds = session.builds
    try:
        prefixes = prefill_shared_prefixes(lm, prompts, device, stats, clock) if session.share_prefixes \
            else [None] * len(prompts)
        for stream, rows in plan_streams([len(p) for p in prompts], budgets, lambda longest, most_new: batch_size_for(
                lm.config, dtype, longest, most_new, budget_bytes, max_batch, area)):
            with clock.span("stream"):
                ids = _decode_stream(lm, [prompts[i] for i in stream], [budgets[i] for i in stream], rows, session,
                                     stats, clock, [prefixes[i] for i in stream])
            for i, row in zip(stream, ids):
                texts[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stops)
                stats.generated_tokens += len(row)
            stats.sequences += len(stream)
    finally:
        stats.decoders = session.builds - builds
        in_streams = clock.seconds("prefill")  # the admissions' prefills, timed inside the streams
        stats.prefill_s = in_streams + clock.seconds("prefix")
        stats.decode_s = max(0.0, clock.seconds("stream") - in_streams)
        if own:
            session.close()
    return texts, stats


def open_session(model: nn.Module, tokenizer: Any, stops: Sequence[str], device: torch.device,
                 cuda_graphs: bool = True, grouped_attention: bool = True, reuse: bool = True,
                 share_prefixes: bool = True) -> DecodeSession:
    """A decoding session for this model, tokenizer and stop strings (see `DecodeSession`)."""
    tables = end_tables(tokenizer, model, tuple(stops)).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DecodeSession(causal_lm(model), pad, tables, device, cuda_graphs, grouped_attention, reuse, share_prefixes)

"""The per-worker training loop of one trial: batches → CE + λ·KD → optimizer, with periodic
multilingual evaluation reported to Ray Train (and, through TuneReportCallback, to Tune).

Read it top to bottom: set-up, the step, evaluation/reporting, the final test evaluation.
The common step is one forward and one backward of CE + λ·KD; λ policies that act on gradients
(grad_conflict, meta-λ) ask for CE and KD gradients apart, handled by `step_with_split_grads`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from trainables import checkpoints, faults
from trainables.alignment import Batch, collate, row_chunks
from trainables.config import TrialConfig, train_compile_enabled
from trainables.data import TrainExample, available_langs, load_records, student_encodings, subset, training_set
from trainables.evaluate import eval_items, evaluate_together
from trainables.losses import LossParts, answer_ce, combine_losses, token_losses, weighted_token_mean
from trainables.metric_keys import diag_key, lambda_key, on_test, time_key, train_key
from trainables.memory import grow_segments, memory_metrics
from trainables.memory_plan import graph_budget_bytes, token_activation_bytes
from trainables.models import AnswerSpanLM, causal_lm, compile_decoder_layers, load_model, load_tokenizer
from trainables.policies import (
    ALL_TOKENS,
    DevSpec,
    GradRequest,
    LambdaPolicy,
    PolicyInputs,
    SplitGrads,
    make_policy,
    per_task_mean,
)
from trainables.gpu_slots import GpuSlot, trial_slot
from trainables.prepared_data import prepared
from trainables.process_clock import process_age_s
from trainables.teacher.cache import CacheError, TeacherCache, is_complete, wait_for_cache
from trainables.train_graphs import DecoderGraphs, train_graphs_enabled
from trainables.trial_log import append_report
from trainables.tasks.schema import TASKS


def batch_stream(examples: Sequence[TrainExample], global_batch: int, seed: int, rank: int,
                 world: int, start: int = 0) -> Iterator[list[TrainExample]]:
    """Endless shuffled global batches over all tasks pooled; each rank gets its slice.

    `start` skips that many batches first: a resumed trial continues the same order."""
    rng = random.Random(seed)
    order: list[int] = []
    drawn = 0
    while True:
        while len(order) < global_batch:
            epoch = list(range(len(examples)))
            rng.shuffle(epoch)
            order.extend(epoch)
        take, order = order[:global_batch], order[global_batch:]
        drawn += 1
        if drawn > start:
            yield [examples[i] for i in take[rank::world]]


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the peak learning rate, then linear decay to 0 (multiplier per step)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


#: Step scalars averaged over tokens between reports (the others are averaged over steps).
TOKEN_WEIGHTED = (train_key("ce"), train_key("kd"))


class Diagnostics:
    """Running sums between two reports: losses, λ per task, teacher vs student CE, crossover step."""

    def __init__(self, ema: float = 0.9) -> None:
        self.ema = ema
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.student_ema: dict[str, float] = {}
        self.teacher_ema: dict[str, float] = {}
        self.crossover: dict[str, int] = {}

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        """Accumulate a weighted value under `name`."""
        self.sums[name] += value * weight
        self.counts[name] += weight

    def record(self, step: int, scalars: dict[str, float], n_tokens: int) -> None:
        """Accumulate one step's scalars by key and track each task's teacher/student crossover."""
        for key, value in scalars.items():
            self.add(key, value, n_tokens if key in TOKEN_WEIGHTED else 1.0)
        for task in TASKS:
            teacher_ce = scalars.get(diag_key(task, "teacher_ce"))
            if teacher_ce is not None:
                self.track_crossover(step, task, scalars[diag_key(task, "student_ce")], teacher_ce)

    def track_crossover(self, step: int, task: str, student_ce: float, teacher_ce: float) -> None:
        """Record the first step at which the student's smoothed CE falls below the teacher's."""
        a = self.ema
        self.student_ema[task] = student_ce if task not in self.student_ema else a * self.student_ema[task] + (1 - a) * student_ce
        self.teacher_ema[task] = teacher_ce if task not in self.teacher_ema else a * self.teacher_ema[task] + (1 - a) * teacher_ce
        if task not in self.crossover and self.student_ema[task] < self.teacher_ema[task]:
            self.crossover[task] = step

    def flush(self) -> dict[str, float]:
        """Means since the last flush (and crossover steps so far); resets the sums."""
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k] > 0}
        out.update({diag_key(t, "crossover_step"): float(s) for t, s in self.crossover.items()})
        self.sums.clear()
        self.counts.clear()
        return out


def dev_batches(cfg: TrialConfig, tokenizer: Any, spec: DevSpec, start: int = 0) -> Callable[[], Batch]:
    """Endless multilingual dev batches (gold answers) for policies with an outer objective (meta-λ).

    The pool holds ≤ spec.per_pair dev examples of every task × evaluation language; every rank
    draws the same batches, so a dev gradient needs no all-reduce."""
    pool = []
    for task in cfg.data.tasks:
        for lang in available_langs(cfg.data, task):
            records = subset(load_records(cfg.data, task, lang, "dev"), spec.per_pair, cfg.data.seed)
            pool += [enc for enc in student_encodings(tokenizer, task, records)
                     if len(enc.input_ids) <= cfg.data.max_student_len]
    if not pool:
        raise ValueError(f"no dev example fits data.max_student_len={cfg.data.max_student_len}")
    stream = batch_stream(pool, spec.batch_size, cfg.train.seed, 0, 1, start)
    return lambda: collate(next(stream), tokenizer.pad_token_id, "right")


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """t summed over data-parallel ranks (a copy)."""
    t = t.clone()
    torch.distributed.all_reduce(t)
    return t


def step_with_split_grads(
    policy: LambdaPolicy, request: GradRequest, step: int, named: list[tuple[str, torch.nn.Parameter]],
    loss: torch.Tensor, ce_tok: torch.Tensor, kd_tok: torch.Tensor, lam: torch.Tensor, task_ids: torch.Tensor,
    n_global: torch.Tensor, world: int,
) -> tuple[torch.Tensor, float]:
    """Back-propagate CE and the λ-weighted KD apart (KD per task if asked), show them to the
    policy, and leave the update's gradient in .grad; returns the effective λ per token [N] and
    the wall time this took (seconds).

    combine: .grad = g_CE + Σ_g m_g·g_KD_g with the policy's multipliers m_g (the forward ran
    outside DDP's sync; the gradients are summed over ranks here). Observe-only: the policy reads
    the KD gradients and .grad is the usual ∇(CE + λ·KD) from `loss`. Costs one backward per KD
    group on top of the usual one. With λ = 0 everywhere there are no KD groups: .grad = g_CE."""
    params = [p for _, p in named]
    cuda = params[0].is_cuda
    if cuda:
        torch.cuda.synchronize()  # time the backward passes only, not the queued forward
    t0 = time.perf_counter()
    # KD groups: the tasks with λ > 0 somewhere in the global batch, so that every rank runs the
    # same backward passes and all-reduces (a rank may lack a task another rank has).
    live = torch.stack([((task_ids == i) & (lam > 0)).sum() for i in range(len(TASKS))]).float()
    live = _sum_over_ranks(live) if world > 1 else live
    present = [t for t, count in zip(TASKS, live.tolist()) if count > 0]
    groups: dict[str, torch.Tensor] = {}  # KD group -> token mask
    if request.by_task:
        groups = {t: task_ids == TASKS.index(t) for t in present}
    elif present:
        groups = {ALL_TOKENS: torch.ones_like(task_ids, dtype=torch.bool)}
    # Terms without DDP's ×world: their gradients are summed (not averaged) over ranks.
    terms = ([weighted_token_mean(ce_tok, None, n_global)] if request.combine else []) + [
        weighted_token_mean(kd_tok, lam * mask, n_global) for mask in groups.values()]
    grads: list[list[torch.Tensor]] = []
    for k, term in enumerate(terms):
        keep = not request.combine or k < len(terms) - 1  # observe-only: `loss` still needs the graph
        g = torch.autograd.grad(term, params, retain_graph=keep, allow_unused=True, materialize_grads=True)
        if world > 1:
            flat = _sum_over_ranks(torch.cat([x.reshape(-1) for x in g]))
            g = [c.view_as(x) for c, x in zip(flat.split([x.numel() for x in g]), g)]
        grads.append(list(g))
    g_ce = grads.pop(0) if request.combine else None
    kd = dict(zip(groups, grads))
    mult = policy.on_split_grads(step, SplitGrads([n for n, _ in named], g_ce, kd))
    effective = lam.clone()
    if not request.combine:
        loss.backward()
    else:
        assert g_ce is not None
        for j, p in enumerate(params):
            g = g_ce[j]
            for group, gk in kd.items():
                g = g + mult.get(group, 1.0) * gk[j]
            p.grad = g
        for group, mask in groups.items():
            effective[mask] = lam[mask] * mult.get(group, 1.0)
    if cuda:
        torch.cuda.synchronize()
    return effective, time.perf_counter() - t0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: run this worker's share of one trial and report to Ray Train."""
    # Ray's part of the trial's start-up: the Train controller, the worker process, its imports;
    # of which this process's own start (imports, CUDA, the process group).
    started, process_s = config.get("driver_started"), process_age_s()
    ray_start = {time_key("worker_start_s"): time.time() - started if started is not None else None,
                 time_key("worker_process_s"): process_s}
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    cfg, trial_name, rank = TrialConfig.model_validate(config["trial"]), config.get("trial_name", "trial"), ctx.get_world_rank()

    def logged(metrics: dict[str, Any]) -> None:
        """Rank 0's reports go to the trial's own log first (trainables/trial_log.py)."""
        if rank == 0 and cfg.experiment_dir:
            append_report(cfg.experiment_dir, trial_name, metrics)

    def report(metrics: dict[str, Any]) -> None:
        logged(metrics)
        ray.train.report(metrics)

    def report_checkpoint(metrics: dict[str, Any], d: Path) -> None:
        # Logged first: killed before its checkpoint is stored, the trial redoes this evaluation
        # from the checkpoint before and its new line replaces this one (same evaluation index).
        logged(metrics)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    latest = ray.train.get_checkpoint()  # set when this run is a retry or a resumed sweep's trial
    with latest.as_directory() if latest is not None else contextlib.nullcontext() as d:
        run_worker(cfg, trial_name, rank, ctx.get_world_size(), ray.train.torch.get_device(), report,
                   wrap_ddp=ray.train.torch.prepare_model, resume_from=Path(d) if d else None,
                   report_checkpoint=report_checkpoint,
                   ray_start={k: v for k, v in ray_start.items() if v is not None})


# ------------------------------------------------------------------------------------ set-up


@dataclass
class TrainState:
    """What one worker's trial holds between steps; built by `setup`, advanced by `train_step`.

    For evaluation-only conditions (base, fewshot) only the fields above `examples` are set."""

    cfg: TrialConfig
    rank: int
    world: int
    device: torch.device
    tokenizer: Any
    model: torch.nn.Module  # the bare model (evaluation decodes with it)
    dev_items: Any
    test_items: Any
    out_dir: Path | None
    span: torch.nn.Module | None = None  # AnswerSpanLM, DDP-wrapped when world > 1
    plain_span: AnswerSpanLM | None = None  # never DDP-wrapped (meta-λ's dev gradient)
    named: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    batches: Iterator[list[TrainExample]] | None = None
    cache: TeacherCache | None = None
    policy: LambdaPolicy | None = None
    dev_batch: Callable[[], Batch] | None = None
    diag: "Diagnostics" = field(default_factory=lambda: Diagnostics())
    tokens_seen: int = 0  # answer tokens trained on (the loss's tokens)
    student_tokens_seen: int = 0  # every non-pad token the student's forward ran over (prompt + answer)
    examples: Sequence[TrainExample] = ()
    dev_draws: int = 0  # dev batches drawn so far (meta-λ), for a resumed dev stream
    cache_wait_s: float = 0.0  # seconds set-up waited for the sweep to finish building the teacher cache
    slot: GpuSlot | None = None  # the GPU slot this trial holds where trials start ahead (trainables/gpu_slots.py)
    slot_wait_s: float = 0.0  # seconds set-up waited for that slot, its weights in host memory
    # Seconds of set-up's parts ('model': tokenizer and weights on the device, or in host memory for
    # a trial started ahead; 'data': evaluation items and training examples, tokenised or read back;
    # 'to_device': such a trial's weights moved once it had a slot), reported in the first report
    # as time/setup_<part>_s.
    setup_parts: dict[str, float] = field(default_factory=dict)

    @property
    def trains(self) -> bool:
        """Whether this trial trains (has an optimizer) or only evaluates."""
        return self.optimizer is not None

    @property
    def params(self) -> list[torch.nn.Parameter]:
        """The trainable parameters, in the optimizer's order."""
        return [p for _, p in self.named]

    @property
    def vocab_size(self) -> int:
        """The student's vocabulary size (0 when the model does not say)."""
        return self.model.config.vocab_size if hasattr(self.model, "config") else 0


def setup(
    cfg: TrialConfig,
    trial_name: str,
    rank: int,
    world: int,
    device: torch.device,
    wrap_ddp: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
) -> TrainState:
    """Model, evaluation items and, for a training condition, data, teacher cache, λ policy and optimizer."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed)
    v = cfg.variant
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model)
    # A trial started ahead of a free GPU slot (resources.start_ahead) keeps its weights in host
    # memory until one frees; the others take theirs now (trainables/gpu_slots.py). No trial holds
    # a slot while it waits for a teacher cache: the cache's build may be waiting for that slot.
    slot, on_host = trial_slot(cfg, device), False
    if slot is not None:
        cache_pending = v.uses_teacher and not is_complete(cfg.cache_paths[v.teacher_mode])
        on_host = cache_pending or not slot.try_acquire()
    model = load_model(cfg.model, device, trainable=v.trains, on_host=on_host)
    t_model = time.perf_counter() - t0
    fewshot_eval = v.condition == "fewshot"
    # Every rank holds the items: each decodes its share, rank 0 scores them all (evaluate()).
    state = TrainState(
        cfg, rank, world, device, tokenizer, model,
        dev_items=prepared(cfg, tokenizer, f"eval-dev{'-fewshot' * fewshot_eval}",
                           lambda: eval_items(cfg, tokenizer, "dev", cfg.eval.dev_per_pair, fewshot_eval)),
        test_items=prepared(cfg, tokenizer, f"eval-test{'-fewshot' * fewshot_eval}",
                            lambda: eval_items(cfg, tokenizer, cfg.eval.test_split, cfg.eval.test_per_pair, fewshot_eval)),
        out_dir=Path(cfg.experiment_dir) / "predictions" / trial_name if cfg.experiment_dir else None,
        slot=slot,
    )
    # Loaded and tokenised by the sweep's first trial, read back by the others (trainables/prepared_data.py).
    examples = prepared(cfg, tokenizer, "train", lambda: training_set(cfg, tokenizer)) if v.trains else []
    state.setup_parts = {"model": t_model, "data": time.perf_counter() - t0 - t_model}
    cache = None
    if v.uses_teacher:  # the sweep may still be building it: this trial has loaded its model meanwhile
        state.cache_wait_s = wait_for_cache(cfg.cache_paths[v.teacher_mode], cfg.teacher.wait_s)
        cache = TeacherCache(cfg.cache_paths[v.teacher_mode], vocab_size=model.config.vocab_size)
    if on_host:
        assert slot is not None
        state.slot_wait_s = slot.acquire()
        t_move = time.perf_counter()
        model.to(device)
        state.setup_parts["to_device"] = time.perf_counter() - t_move
    if device.type == "cuda":
        grow_segments()  # from here on: the weights were loaded into plain segments
    if not v.trains:
        return state
    policy = make_policy(v.policy.name, v.policy.params, cfg.data.tasks) if cache is not None else None
    compiled = train_compile_enabled(cfg.train, device.type)
    if compiled:  # short runs stay eager: see COMPILE_MIN_STEPS
        compile_decoder_layers(model, retains_graph=policy is not None and policy.acts_on_grads)
    state = start_training(state, examples, cache, policy, wrap_ddp)
    if train_graphs_enabled(cfg.train.cuda_graphs, device.type, world, compiled):
        record_decoder_passes(state)
    return state


def record_decoder_passes(state: TrainState) -> DecoderGraphs:
    """Let the training forward run the decoder through recorded CUDA graphs (trainables/train_graphs.py),
    within what the trial's GPU share leaves beside a worst-case eager step; off a GPU the same
    padded, unmasked passes run eagerly (what the CPU tests check)."""
    assert state.plain_span is not None
    capture = state.device.type == "cuda"
    lm = causal_lm(state.model)
    budget = graph_budget_bytes(state.cfg, lm.config, state.device) if capture else None
    graphs = DecoderGraphs(lm.get_decoder(), state.tokenizer.pad_token_id, capture=capture,
                           max_bytes=budget, token_bytes=token_activation_bytes(state.cfg, lm.config))
    state.plain_span.graphs = graphs
    return graphs


def start_training(
    state: TrainState,
    examples: Sequence[TrainExample],
    cache: TeacherCache | None,
    policy: LambdaPolicy | None,
    wrap_ddp: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
) -> TrainState:
    """The training half of `setup` (also what bench/ times): span, AdamW, schedule, batches, λ policy."""
    cfg = state.cfg
    state.cache, state.policy = cache, policy
    # Training mode for every module from the first step (LoRA dropout on): a loaded model comes
    # in eval mode, and evaluation restores the mode it found.
    state.model.train()
    state.plain_span = AnswerSpanLM(state.model)
    # DDP over the span module, so gradient syncing sees the call.
    state.span = wrap_ddp(state.plain_span) if state.world > 1 else state.plain_span
    state.named = [(n, p) for n, p in state.span.named_parameters() if p.requires_grad]
    lr = cfg.variant.lr if cfg.variant.lr is not None else cfg.train.lr
    # On a GPU, AdamW's fused kernel: a few launches per step where foreach's take dozens for a LoRA
    # student's 392 factors (the same update up to rounding).
    fused = all(p.is_cuda for p in state.params) or None
    state.optimizer = torch.optim.AdamW(state.params, lr=lr, weight_decay=cfg.train.weight_decay, fused=fused)
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(
        state.optimizer, lr_lambda(cfg.train.warmup_steps, cfg.train.steps))
    state.examples = examples
    state.batches = batch_stream(examples, cfg.train.batch_size, cfg.train.seed, state.rank, state.world)
    if policy is not None and policy.dev:
        state.dev_batch = dev_batches(cfg, state.tokenizer, policy.dev)
    return state


def resume(state: TrainState, directory: Path) -> checkpoints.Resumed:
    """Continue a trial from its checkpoint: state restored, data streams redrawn to where it was."""
    resumed = checkpoints.load(state, directory)
    cfg = state.cfg
    state.batches = batch_stream(state.examples, cfg.train.batch_size, cfg.train.seed, state.rank, state.world,
                                 start=resumed.step)
    if state.dev_batch is not None and state.policy is not None and state.policy.dev:
        state.dev_batch = dev_batches(cfg, state.tokenizer, state.policy.dev, start=state.dev_draws)
    return resumed


# -------------------------------------------------------------------------------------- step


def dev_grads(state: TrainState) -> list[torch.Tensor]:
    """∇ of the mean gold-answer CE on the next dev batch, over the trainable parameters.

    Dropout is off (eval mode): a cleaner outer gradient, and the training RNG stream is left
    untouched, so a policy that reads it trains exactly as one that does not. It runs outside
    DDP (plain_span): every rank sees the same dev batch, so no all-reduce is needed. The batch
    runs in chunks of at most a training batch's rows (each trimmed to its own length) and their
    gradients are summed, so the dev gradient needs no more activation memory than a step."""
    assert state.dev_batch is not None and state.plain_span is not None
    b = state.dev_batch().to(state.device)
    state.dev_draws += 1
    rows = max(1, math.ceil(state.cfg.train.batch_size / state.world))
    grads: list[torch.Tensor] | None = None
    state.model.eval()
    try:
        for c in row_chunks(b, rows):
            logits = state.plain_span(c.input_ids, c.attention_mask, c.position_ids, c.rows, c.cols)
            ce = answer_ce(logits, c.targets).sum() / b.n_tokens
            part = torch.autograd.grad(ce, state.params, allow_unused=True, materialize_grads=True)
            grads = list(part) if grads is None else [g.add_(p) for g, p in zip(grads, part)]
        assert grads is not None
        return grads
    finally:
        state.model.train()


def train_step(state: TrainState, step: int) -> dict[str, float]:
    """One optimizer step of CE + λ·KD on the next batch; returns its scalars by key (one host sync)."""
    cfg, policy, cache, world, device = state.cfg, state.policy, state.cache, state.world, state.device
    assert state.span is not None and state.optimizer is not None and state.scheduler is not None
    exs = next(state.batches)
    host = collate([e.student for e in exs], state.tokenizer.pad_token_id, "right", cfg.train.kd_alignment)
    host_task_ids = torch.tensor([TASKS.index(e.task) for e in exs])[host.rows]  # [N], on the host
    batch, task_ids = host.to(device), host_task_ids.to(device)
    n_global = torch.tensor(float(batch.n_tokens), device=device)
    if world > 1:
        torch.distributed.all_reduce(n_global)

    # Gradient-acting policies (grad_conflict, meta) may ask for CE and KD gradients apart.
    request = policy.grad_request(step) if policy is not None else None
    legacy = cfg.train.kd_alignment == "legacy" and cache is not None  # KD reads the answer positions too
    # Vocabulary logits only at the answer-predicting positions: [N, V] (2N under legacy KD).
    cols = torch.cat([batch.cols, batch.kd_cols]) if legacy else batch.cols
    rows = torch.cat([batch.rows, batch.rows]) if legacy else batch.rows
    # A combining policy builds the gradient itself and sums it over ranks: no DDP sync.
    no_sync = world > 1 and request is not None and request.combine
    # A recorded backward runs once per forward: split-gradient steps take the eager decoder.
    state.plain_span.use_graphs = request is None
    with state.span.no_sync() if no_sync else contextlib.nullcontext():
        logits = state.span(batch.input_ids, batch.attention_mask, batch.position_ids, rows, cols)
    n = batch.n_tokens
    ce_logits, kd_logits = (logits[:n], logits[n:]) if legacy else (logits, None)

    teacher, tdiag, lam = None, {}, None
    if cache is not None:
        teacher, tdiag = cache.gather(e.key for e in exs)
        if not torch.equal(tdiag["gold_id"], host.targets):
            raise CacheError("teacher cache answer tokens differ from the student's: stale cache or tokenizer")
        teacher = type(teacher)(*(t.to(device) for t in teacher))
    tok = token_losses(ce_logits, batch.targets, teacher, cfg.train.kd_loss, cfg.train.kd_temperature,
                       cfg.train.jsd_beta, kd_logits=kd_logits)  # CE [N], KD [N] (None without teacher)
    if policy is not None and teacher is not None and tok.kd is not None:
        lam = policy.weights(PolicyInputs(
            step=step, task_ids=task_ids, ce=tok.ce.detach(), kd=tok.kd.detach(),
            teacher_entropy=tdiag["entropy"].to(device), teacher_topk_logprobs=teacher.logprobs,
            teacher_tail_logmass=teacher.tail_logmass, vocab_size=state.vocab_size, top_k=cache.top_k,
            global_sum=_sum_over_ranks if world > 1 else (lambda t: t),
        )).to(tok.kd.dtype)
    parts = combine_losses(tok.ce, tok.kd, lam, n_global)
    # DDP averages gradients over ranks: scale so the result is the mean over all ranks' tokens.
    loss = parts.total * world

    state.optimizer.zero_grad(set_to_none=True)
    seconds = None
    if request is not None:
        kd_tok = tok.kd if tok.kd is not None else torch.zeros_like(tok.ce)
        lam_tok = lam if lam is not None else torch.zeros_like(tok.ce)
        lam, seconds = step_with_split_grads(policy, request, step, state.named, loss, tok.ce, kd_tok, lam_tok,
                                             task_ids, n_global, world)
    else:
        loss.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.params, cfg.train.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    if policy is not None:
        policy.after_step(step, functools.partial(dev_grads, state) if state.dev_batch is not None else None)

    state.tokens_seen += n
    state.student_tokens_seen += int(host.attention_mask.sum())  # host tensor: no device sync
    # Teacher CE on the gold answer: the cache's log-prob at the causal predicting position (host).
    teacher_ce = per_task_mean(-tdiag["gold_logprob"], host_task_ids) if cache is not None else {}
    scalars = step_scalars(parts, lam, task_ids, host_task_ids, teacher_ce)
    if not math.isfinite(scalars[train_key("loss")]):
        raise FloatingPointError(f"non-finite loss at step {step} (loss = {scalars[train_key('loss')]})")
    if seconds is not None:
        scalars = {train_key("split_backward_s"): seconds, **scalars}
    state.diag.record(step, scalars, n)
    return scalars


def step_scalars(parts: LossParts, lam: torch.Tensor | None, task_ids: torch.Tensor, host_task_ids: torch.Tensor,
                 teacher_ce: dict[str, float]) -> dict[str, float]:
    """The step's scalars by key, brought to the host in one transfer (each sync stops the host from
    queueing GPU work): losses, and the student's CE and λ per task present (means on the device)."""
    present = sorted(set(host_task_ids.tolist()))
    tasks = [TASKS[i] for i in present]
    device = parts.ce_per_token.device
    counts = torch.bincount(host_task_ids, minlength=len(TASKS)).clamp(min=1).to(device)

    def task_means(values: torch.Tensor) -> list[torch.Tensor]:
        sums = torch.zeros(len(TASKS), device=device).index_add_(0, task_ids, values.detach().float())
        return list((sums / counts)[present].unbind())

    kd_tok = parts.kd_per_token
    named: dict[str, torch.Tensor] = {
        train_key("ce"): parts.ce_per_token.detach().mean(),
        train_key("kd"): (kd_tok if kd_tok is not None else torch.zeros_like(parts.ce_per_token)).detach().mean(),
        train_key("loss"): parts.total.detach(),
        **dict(zip((diag_key(t, "student_ce") for t in tasks), task_means(parts.ce_per_token))),
    }
    if lam is not None:
        named.update(zip((lambda_key(t) for t in tasks), task_means(lam)))
    values = torch.stack([x.float() for x in named.values()]).tolist()  # the one host sync
    out = dict(zip(named, values))
    out.update({diag_key(t, "teacher_ce"): v for t, v in teacher_ce.items()})
    return out


# -------------------------------------------------------------------------- evaluation, report


def evaluation_report(state: TrainState, step: int, eval_index: int, extra: dict[str, float],
                      final: bool) -> dict[str, Any]:
    """Evaluate on dev (and test when final), decoding on every rank and scoring on rank 0; the
    metrics every rank reports."""
    cfg, rank = state.cfg, state.rank
    metrics: dict[str, Any] = {"step": step, "eval_index": eval_index, **extra}
    t0 = time.perf_counter()
    graphs = state.plain_span.graphs if state.plain_span is not None else None
    if graphs is not None:
        metrics.update({train_key("graph_shapes"): graphs.shapes, time_key("graph_record_s"): graphs.record_s,
                        train_key("graph_over_budget_steps"): graphs.over_budget_steps,
                        train_key("graph_gb"): graphs.held / 2**30,
                        train_key("graph_reserved_gb"): graphs.reserved_growth / 2**30})
        # The graphs stay recorded through an evaluation between steps (each takes ~1.3 s to record
        # on the 3B model: study run 11 spent 16-19 s a trial recording them again after each one);
        # they fit in what the trial's share left beside a worst-case step, and evaluation's KV budget
        # is what the share leaves now. The last evaluation gets their memory: no step follows it.
        if final:
            graphs.release()
    # Decoding runs eager: compiled layers would recompile for every new sequence length.
    with torch.compiler.set_stance("force_eager"):
        splits = {"dev": state.dev_items, **({"test": state.test_items} if final else {})}
        # eval.joint_final: one decoding pass over dev and test, whose gen/* covers both.
        passes = [splits] if cfg.eval.joint_final else [{name: items} for name, items in splits.items()]
        rows: dict[str, list[dict[str, Any]]] = {}
        for group in passes:
            scored, got, counts = evaluate_together(state.model, state.tokenizer, group, cfg, state.device, rank,
                                                    state.world)
            rows.update(got)
            # A split's keys as they are on dev, 'test/'-prefixed on test; a pass's counts go with its
            # first split (gen/*, or test/gen/* for a test pass of its own).
            for name, values in [*scored.items(), (next(iter(group)), counts)]:
                metrics.update(values if name == "dev" else {on_test(k): v for k, v in values.items()})
        if final and rank == 0:
            _save_predictions(state.out_dir, rows, cfg)
    if rank == 0:
        metrics[time_key("eval_s")] = time.perf_counter() - t0
    metrics.update(memory_metrics())  # peak RSS (and GPU) of this worker so far: training and evaluation
    metrics["final"] = final
    return metrics


def run_worker(
    cfg: TrialConfig,
    trial_name: str,
    rank: int,
    world: int,
    device: torch.device,
    report: Callable[[dict[str, Any]], None],
    wrap_ddp: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
    resume_from: Path | None = None,
    report_checkpoint: Callable[[dict[str, Any], Path], None] | None = None,
    ray_start: dict[str, float] | None = None,
) -> torch.nn.Module:
    """Train (or only evaluate) one trial's student on this worker; returns the trained model.

    `report` receives one metrics dict per evaluation (ray.train.report under Ray); `wrap_ddp`
    wraps the model for data parallelism when world > 1. With `report_checkpoint`, every
    `train.checkpoint_every`-th evaluation goes there instead, with a checkpoint folder beside
    it; `resume_from` is such a folder to continue from. `ray_start` (time/worker_start_s: seconds
    from the trial's driver starting to this worker starting, Ray's part of a trial's start-up;
    time/worker_process_s: how long this worker's process had existed by then) goes into the
    first report."""
    t_setup = time.perf_counter()
    state = setup(cfg, trial_name, rank, world, device, wrap_ddp)
    try:
        return _run(state, trial_name, report, resume_from, report_checkpoint,
                    startup=time.perf_counter() - t_setup, ray_start=ray_start or {})
    finally:
        if state.slot is not None:
            state.slot.release()


def _run(state: TrainState, trial_name: str, report: Callable[[dict[str, Any]], None],
         resume_from: Path | None, report_checkpoint: Callable[[dict[str, Any], Path], None] | None,
         startup: float, ray_start: dict[str, float]) -> torch.nn.Module:
    """`run_worker` after set-up: the steps, evaluations and reports (`startup`: set-up's seconds)."""
    cfg = state.cfg
    # Where a trial's start goes (in its first report): this set-up (model, data, cache, policy),
    # the waits for a teacher cache still being built and for a GPU slot (a trial started ahead
    # of one), then the first step (which compiles the decoder layers when they are compiled, or
    # records the first CUDA graph).
    startup = {time_key("setup_s"): startup - state.cache_wait_s - state.slot_wait_s,
               **{time_key(f"setup_{part}_s"): s for part, s in state.setup_parts.items()}, **ray_start}
    if state.cache_wait_s:  # started while the sweep built its teacher cache
        startup[time_key("cache_wait_s")] = state.cache_wait_s
    if state.slot_wait_s:  # started while the GPU's slots were all in use
        startup[time_key("slot_wait_s")] = state.slot_wait_s
    if not state.trains or cfg.train.steps == 0:  # base / fewshot, or zero steps: evaluate as is
        report(evaluation_report(state, 0, 1, startup, final=True))
        return state.model
    first, eval_index = 1, 0
    if resume_from is not None:
        resumed = resume(state, resume_from)
        first, eval_index = resumed.step + 1, resumed.eval_index
        if resumed.step >= cfg.train.steps:  # it had finished: its last report stands
            report(resumed.last_report)
            return state.model
    t_start = time.perf_counter()
    for step in range(first, cfg.train.steps + 1):
        faults.at_step(cfg, trial_name, state.rank, step)
        t_step = time.perf_counter()
        train_step(state, step)  # ends in its one host sync (the step's diagnostics)
        if step == first:
            startup[time_key("first_step_s")] = time.perf_counter() - t_step
        final = step == cfg.train.steps
        if step % cfg.train.eval_every == 0 or final:
            eval_index += 1
            extra = {**state.diag.flush(), **(state.policy.diagnostics() if state.policy is not None else {}),
                     train_key("lr"): state.scheduler.get_last_lr()[0], train_key("tokens_seen"): state.tokens_seen,
                     train_key("student_tokens_seen"): state.student_tokens_seen,
                     time_key("train_s"): time.perf_counter() - t_start, **startup}
            startup = {}
            metrics = evaluation_report(state, step, eval_index, extra, final)
            every = cfg.train.checkpoint_every
            if report_checkpoint is not None and every > 0 and (eval_index % every == 0 or final):
                with tempfile.TemporaryDirectory(prefix="lamtune-ckpt-") as tmp:
                    checkpoints.save(state, Path(tmp), step, eval_index, metrics)
                    report_checkpoint(metrics, Path(tmp))
            else:
                report(metrics)
            t_start = time.perf_counter()
    return state.model


def _save_predictions(out_dir: Path | None, splits: dict[str, list[dict[str, Any]]], cfg: TrialConfig) -> None:
    """Write per-example predictions (one parquet per split) for confidence intervals later."""
    if out_dir is None or not cfg.eval.save_predictions:
        return
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        tmp = out_dir / f".{split}.parquet.tmp"
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.replace(out_dir / f"{split}.parquet")

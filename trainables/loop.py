"""The per-worker training loop of one trial: batches → CE + λ·KD → optimizer, with periodic
multilingual evaluation reported to Ray Train (and, through TuneReportCallback, to Tune).

Read it top to bottom: set-up, the step, evaluation/reporting, the final test evaluation.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from trainables.alignment import collate
from trainables.config import TrialConfig
from trainables.data import TrainExample, training_set
from trainables.evaluate import eval_items, evaluate
from trainables.losses import answer_ce, kd_per_token, weighted_token_mean
from trainables.models import AnswerSpanLM, load_model, load_tokenizer
from trainables.policies import LambdaPolicy, PolicyInputs, make_policy, per_task_mean
from trainables.teacher.cache import CacheError, TeacherCache
from trainables.tasks.schema import TASKS


def batch_stream(examples: Sequence[TrainExample], global_batch: int, seed: int, rank: int,
                 world: int) -> Iterator[list[TrainExample]]:
    """Endless shuffled global batches over all tasks pooled; each rank gets its slice."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        while len(order) < global_batch:
            epoch = list(range(len(examples)))
            rng.shuffle(epoch)
            order.extend(epoch)
        take, order = order[:global_batch], order[global_batch:]
        yield [examples[i] for i in take[rank::world]]


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the peak learning rate, then linear decay to 0 (multiplier per step)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


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
        out.update({f"diag/{t}/crossover_step": float(s) for t, s in self.crossover.items()})
        self.sums.clear()
        self.counts.clear()
        return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: run this worker's share of one trial and report to Ray Train."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    run_worker(
        TrialConfig.model_validate(config["trial"]),
        trial_name=config.get("trial_name", "trial"),
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        report=ray.train.report,
        wrap_ddp=ray.train.torch.prepare_model,
    )


def run_worker(
    cfg: TrialConfig,
    trial_name: str,
    rank: int,
    world: int,
    device: torch.device,
    report: Callable[[dict[str, Any]], None],
    wrap_ddp: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
) -> torch.nn.Module:
    """Train (or only evaluate) one trial's student on this worker; returns the trained model.

    `report` receives one metrics dict per evaluation (ray.train.report under Ray); `wrap_ddp`
    wraps the model for data parallelism when world > 1."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed)
    v = cfg.variant
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, device, trainable=v.trains)
    span: torch.nn.Module = AnswerSpanLM(model)
    fewshot_eval = v.condition == "fewshot"
    dev_items = eval_items(cfg, tokenizer, "dev", cfg.eval.dev_per_pair, fewshot_eval) if rank == 0 else []
    test_items = (eval_items(cfg, tokenizer, cfg.eval.test_split, cfg.eval.test_per_pair, fewshot_eval)
                  if rank == 0 else [])
    out_dir = Path(cfg.experiment_dir) / "predictions" / trial_name if cfg.experiment_dir else None

    def evaluate_and_report(step: int, eval_index: int, extra: dict[str, float], final: bool) -> None:
        """Evaluate on dev (and test when final) on rank 0, then report from every rank."""
        metrics: dict[str, Any] = {"step": step, "eval_index": eval_index, **extra}
        if rank == 0:
            t0 = time.perf_counter()
            dev, dev_rows = evaluate(model, tokenizer, dev_items, cfg, device)
            metrics.update(dev)
            if final:
                test, test_rows = evaluate(model, tokenizer, test_items, cfg, device)
                metrics.update({f"test/{k}": v for k, v in test.items()})
                _save_predictions(out_dir, {"dev": dev_rows, "test": test_rows}, cfg)
            metrics["time/eval_s"] = time.perf_counter() - t0
        metrics["final"] = final
        report(metrics)

    # ---------------------------------------------------------------- evaluation-only conditions
    if not v.trains:
        evaluate_and_report(0, 1, {}, final=True)
        return model

    # ---------------------------------------------------------------- set-up
    examples = training_set(cfg, tokenizer)
    cache = TeacherCache(cfg.cache_paths[v.teacher_mode]) if v.uses_teacher else None
    policy: LambdaPolicy | None = make_policy(v.policy.name, v.policy.params, cfg.data.tasks) if cache else None
    if world > 1:
        span = wrap_ddp(span)  # DDP over the span module, so gradient syncing sees the call
    params = [p for p in span.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.warmup_steps, cfg.train.steps))
    batches = batch_stream(examples, cfg.train.batch_size, cfg.train.seed, rank, world)
    legacy = cfg.train.kd_alignment == "legacy"
    vocab = model.config.vocab_size if hasattr(model, "config") else 0
    diag = Diagnostics()
    tokens_seen, eval_index, t_start = 0, 0, time.perf_counter()

    # ---------------------------------------------------------------- training
    for step in range(1, cfg.train.steps + 1):
        exs = next(batches)
        batch = collate([e.student for e in exs], tokenizer.pad_token_id, "right", cfg.train.kd_alignment).to(device)
        task_ids = torch.tensor([TASKS.index(e.task) for e in exs], device=device)[batch.rows]  # [N]
        n_local = torch.tensor(float(batch.n_tokens), device=device)
        n_global = n_local.clone()
        if world > 1:
            torch.distributed.all_reduce(n_global)

        # Vocabulary logits only at the answer-predicting positions: [N, V] (2N under legacy KD).
        cols = torch.cat([batch.cols, batch.kd_cols]) if (legacy and cache) else batch.cols
        rows = torch.cat([batch.rows, batch.rows]) if (legacy and cache) else batch.rows
        logits = span(batch.input_ids, batch.attention_mask, batch.position_ids, rows, cols)
        ce_logits, kd_logits = (logits[: batch.n_tokens], logits[batch.n_tokens:]) if (legacy and cache) else (logits, logits)
        ce_tok = answer_ce(ce_logits, batch.targets)  # [N]
        # DDP averages gradients over ranks: scale so the result is the mean over all ranks' tokens.
        loss = weighted_token_mean(ce_tok, None, n_global) * world
        kd_tok = torch.zeros_like(ce_tok)
        lam = torch.zeros_like(ce_tok)
        if cache is not None and policy is not None:
            teacher, tdiag = cache.gather(e.key for e in exs)
            if not torch.equal(tdiag["gold_id"].to(device), batch.targets):
                raise CacheError("teacher cache answer tokens differ from the student's: stale cache or tokenizer")
            teacher = type(teacher)(*(t.to(device) for t in teacher))
            kd_tok = kd_per_token(kd_logits, teacher, cfg.train.kd_loss, cfg.train.kd_temperature, cfg.train.jsd_beta)
            lam = policy.weights(PolicyInputs(
                step=step, task_ids=task_ids, ce=ce_tok.detach(), kd=kd_tok.detach(),
                teacher_entropy=tdiag["entropy"].to(device), vocab_size=vocab, top_k=cache.top_k,
            )).to(kd_tok.dtype)
            loss = loss + weighted_token_mean(kd_tok, lam, n_global) * world
            teacher_ce = -tdiag["gold_logprob"]
            for task, value in per_task_mean(teacher_ce, task_ids.cpu()).items():
                diag.add(f"diag/{task}/teacher_ce", value)
                student = float(ce_tok.detach()[task_ids == TASKS.index(task)].mean())
                diag.track_crossover(step, task, student, value)
            for task, value in per_task_mean(lam.detach(), task_ids).items():
                diag.add(f"lambda/{task}/mean", value)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()

        # ------------------------------------------------------------ bookkeeping
        n = batch.n_tokens
        tokens_seen += n
        diag.add("train/ce", float(ce_tok.detach().mean()), n)
        diag.add("train/kd", float(kd_tok.detach().mean()), n)
        diag.add("train/loss", float(loss.detach()) / world)
        for task, value in per_task_mean(ce_tok.detach(), task_ids).items():
            diag.add(f"diag/{task}/student_ce", value)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"loss is {float(loss)} at step {step}")

        final = step == cfg.train.steps
        if step % cfg.train.eval_every == 0 or final:
            eval_index += 1
            elapsed = time.perf_counter() - t_start
            extra = {**diag.flush(), "train/lr": scheduler.get_last_lr()[0], "train/tokens_seen": tokens_seen,
                     "time/train_s": elapsed}
            evaluate_and_report(step, eval_index, extra, final)
            t_start = time.perf_counter()
    if cfg.train.steps == 0:
        evaluate_and_report(0, 1, {}, final=True)
    return model


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

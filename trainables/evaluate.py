"""Evaluation per task × language: greedy generation (or label scoring), parsing, metrics.

Reports `<task>/<lang>/<metric>` (0–100), `<task>/<lang>/parse_fail` (% of outputs that could
not be parsed; they count as wrong), `<task>/avg` (the headline metric averaged over the
task's languages) and `avg` (the mean of the task averages), spelled by trainables.metric_keys.

A (task, language) pair the real dataset lacks (PAWS-X has no Hindi, MLQA no French) is not
evaluated and reports nothing — no zero that would drag averages down; `skipped_pairs` lists
those pairs with the reason, for the results to record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from trainables.alignment import Encoded, collate, encode, encode_prompts
from trainables.config import TrialConfig
from trainables.data import available_langs, close_with_eos, fewshot_encodings, load_records, subset
from trainables.generation import GenerationStats, greedy_generate, open_session
from trainables.memory_plan import eval_budget_bytes
from trainables.merged_lora import merged_lora
from trainables.metric_keys import ALL, AVG, eval_key, gen_key
from trainables.models import AnswerSpanLM
from trainables.prompts import render
from trainables.tasks import get_task, metric
from trainables.tasks.loaders import missing_reason
from trainables.tasks.schema import HEADLINE_METRIC, Record


@dataclass(frozen=True)
class EvalItem:
    """One evaluation example: task, language, record and its prompt's token ids."""

    task: str
    lang: str
    record: Record
    prompt_ids: tuple[int, ...]


def skipped_pairs(cfg: TrialConfig) -> list[tuple[str, str, str]]:
    """The (task, language, reason) pairs of data.tasks × data.eval_langs that are not evaluated."""
    out = []
    for task in cfg.data.tasks:
        kept = available_langs(cfg.data, task)
        for lang in cfg.data.eval_langs:
            if lang not in kept:
                out.append((task, lang, missing_reason(task, lang) or f"{task} has no {lang} in this source"))
    return out


def eval_items(cfg: TrialConfig, tokenizer: Any, split: str, n_per_pair: int, fewshot: bool) -> list[EvalItem]:
    """The deterministic evaluation subset: n examples per available (task, language).

    With `fewshot`, each prompt shows k demonstrations drawn from the same language's dev split
    (the untrained teacher, evaluated)."""
    items: list[EvalItem] = []
    for task in cfg.data.tasks:
        for lang in available_langs(cfg.data, task):
            records = subset(load_records(cfg.data, task, lang, split), n_per_pair, cfg.data.seed)
            if fewshot:
                pool = load_records(cfg.data, task, lang, "dev")
                encs = fewshot_encodings(tokenizer, task, records, pool, cfg.data.shots[task], cfg.data.seed,
                                         range(len(records)), cfg.data.max_teacher_len)
                prompts = [enc.input_ids[:enc.answer_start] for enc in encs]
            else:
                prompts = encode_prompts(tokenizer, [render(tokenizer, task, r).prompt for r in records])
            items += [EvalItem(task, lang, r, ids) for r, ids in zip(records, prompts)]
    return items


@torch.no_grad()
def choice_logprobs(model: nn.Module, tokenizer: Any, item: EvalItem, device: torch.device) -> list[float]:
    """Total log-likelihood of each of the task's answer strings (its answer tokens) after the item's prompt."""
    choices = get_task(item.task).choices
    if not choices:
        raise ValueError(f"eval.mode=score supports classification tasks only, not {item.task}")
    eos = close_with_eos(tokenizer)
    encs = []
    for c in choices:
        # The candidate's answer tokens, appended to the item's own prompt (zero- or few-shot).
        rp = render(tokenizer, item.task, {**item.record, **_as_gold(item.task, c)})
        answer_ids = encode(tokenizer, rp.prompt, rp.answer, eos).answer_ids
        encs.append(Encoded(item.prompt_ids + answer_ids, len(item.prompt_ids)))
    b = collate(encs, tokenizer.pad_token_id, "right").to(device)
    logits = AnswerSpanLM(model)(b.input_ids, b.attention_mask, b.position_ids, b.rows, b.cols)
    tok = torch.log_softmax(logits.float(), -1).gather(-1, b.targets[:, None]).squeeze(-1)
    totals = torch.zeros(len(choices), device=tok.device).index_add_(0, b.rows, tok)
    return [float(t) for t in totals]


def score_choices(model: nn.Module, tokenizer: Any, items: Sequence[EvalItem], batch_size: int,
                  device: torch.device) -> list[str]:
    """For classification items: the answer string whose tokens have the highest total log-likelihood."""
    chosen: list[str] = []
    for item in items:
        scores = choice_logprobs(model, tokenizer, item, device)
        chosen.append(get_task(item.task).choices[scores.index(max(scores))])
    return chosen


def _as_gold(task: str, choice: str) -> dict[str, Any]:
    """Record fields that make `choice` the gold answer (used to render a candidate answer)."""
    from trainables.tasks.schema import PA_ANSWERS

    return {"label": PA_ANSWERS.index(choice)} if task == "pa" else {"label": choice}


def predict(model: nn.Module, tokenizer: Any, items: Sequence[EvalItem], cfg: TrialConfig,
            device: torch.device, stats: GenerationStats | None = None) -> list[str]:
    """The model's output text for each item, in order: a greedy continuation, or under
    eval.mode=score the best-scoring answer string of a classification task. Generation counts
    are added to `stats` when given."""
    was_training = model.training
    model.eval()
    texts = [""] * len(items)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the training step's cached blocks: give them to the KV cache
    ev = cfg.eval
    try:
        # LoRA folded into weight copies for the whole prediction; one decoding session across
        # tasks (its recorded steps read those copies, so it closes before they are dropped).
        with merged_lora(model, ev.merge_lora):
            session = open_session(model, tokenizer, ev.stop_strings, device, ev.cuda_graphs, ev.grouped_attention,
                                   ev.reuse_decoder, ev.share_prefixes)
            try:
                for idx, scored in _prediction_groups(items, cfg):
                    if scored:
                        picks = score_choices(model, tokenizer, [items[i] for i in idx], ev.batch_size, device)
                        got = [" " + p for p in picks]
                    else:
                        # What the session holds is this call's to reuse or give back: part of its budget.
                        budget = eval_budget_bytes(cfg, device) + session.held_bytes()
                        got, st = greedy_generate(model, tokenizer, [items[i].prompt_ids for i in idx],
                                                  [ev.max_new_tokens[items[i].task] for i in idx], device, budget,
                                                  ev.batch_size, ev.stop_strings, ev.attention_budget,
                                                  session=session)
                        if stats is not None:
                            stats.add(st)
                    for i, text in zip(idx, got):
                        texts[i] = text
            finally:
                session.close()
    finally:
        model.train(was_training)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # KV caches freed: the memory goes back to trials sharing the GPU
    return texts


def _prediction_groups(items: Sequence[EvalItem], cfg: TrialConfig) -> list[tuple[list[int], bool]]:
    """The item indices predicted together, and whether they are scored (not generated): one group
    per task, or with eval.pool_tasks every generated item in one group (batched by prompt length
    across tasks, each within its task's token budget) after the scored ones."""
    ev = cfg.eval
    by_task: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_task.setdefault(it.task, []).append(i)
    groups = [(idx, ev.mode == "score" and bool(get_task(task).choices)) for task, idx in by_task.items()]
    if not ev.pool_tasks:
        return groups
    generated = sorted(i for idx, scored in groups if not scored for i in idx)
    return [g for g in groups if g[1]] + ([(generated, False)] if generated else [])


def score(items: Sequence[EvalItem], texts: Sequence[str], cfg: TrialConfig) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over items given their output texts, and one prediction row per example."""
    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    task_avgs: list[float] = []
    for task in cfg.data.tasks:
        spec = get_task(task)
        task_pairs = [(it, t) for it, t in zip(items, texts, strict=True) if it.task == task]
        if not task_pairs:
            continue
        per_lang: dict[str, float] = {}
        for lang in dict.fromkeys(it.lang for it, _ in task_pairs):
            pairs = [(it, t) for it, t in task_pairs if it.lang == lang]
            parsed = [spec.parse(t, it.record) for it, t in pairs]
            preds = [p.prediction for p in parsed]
            refs = [spec.reference(it.record) for it, _ in pairs]
            scores = metric(task, lang, preds, refs)
            for name, value in scores.items():
                metrics[eval_key(task, lang, name)] = float(value)
            metrics[eval_key(task, lang, "parse_fail")] = 100.0 * sum(p.failed for p in parsed) / len(parsed)
            per_lang[lang] = float(scores[HEADLINE_METRIC[task]])
            for (it, text), p, ref in zip(pairs, parsed, refs):
                rows.append({"task": task, "lang": lang, "example_id": it.record["id"], "output": text,
                             "prediction": json.dumps(p.prediction, ensure_ascii=False),
                             "reference": json.dumps(ref, ensure_ascii=False), "parse_failed": p.failed})
        task_avgs.append(sum(per_lang.values()) / len(per_lang))
        metrics[eval_key(task, AVG)] = task_avgs[-1]
    metrics[eval_key(ALL, AVG)] = sum(task_avgs) / len(task_avgs) if task_avgs else 0.0
    return metrics, rows


def predict_sharded(predict_shard: Callable[[Sequence[EvalItem]], list[str]], items: Sequence[EvalItem],
                    rank: int, world: int) -> list[str] | None:
    """Every rank predicts items[rank::world]; rank 0 gets all texts in item order, others None.

    A collective: every rank of the process group must call it with the same items."""
    mine = predict_shard(items[rank::world])
    if world == 1:
        return mine
    shards: list[Any] = [None] * world
    torch.distributed.all_gather_object(shards, mine)
    if rank != 0:
        return None
    texts = [""] * len(items)
    for r, shard in enumerate(shards):
        texts[r::world] = shard
    return texts


def evaluate(model: nn.Module, tokenizer: Any, items: Sequence[EvalItem], cfg: TrialConfig,
             device: torch.device, rank: int = 0, world: int = 1) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over `items` and one prediction row per example.

    With world > 1 (a data-parallel trial) every rank decodes its share of the items and rank 0
    scores them all; the other ranks get empty results."""
    scored, rows, counts = evaluate_together(model, tokenizer, {"items": items}, cfg, device, rank, world)
    return (scored["items"] | counts, rows["items"]) if scored else ({}, [])


def evaluate_together(model: nn.Module, tokenizer: Any, splits: dict[str, Sequence[EvalItem]], cfg: TrialConfig,
                      device: torch.device, rank: int = 0, world: int = 1
                      ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Every split's items decoded in one pass (shared streams, one decoding session: fewer
    decoding steps than a pass per split), then each split scored on its own: metrics and rows by
    split, and the pass's decoding counts summed over ranks (`gen/*`, every split together).
    Ranks as `evaluate`: the other ranks get empty results."""
    names = list(splits)
    items = [it for name in names for it in splits[name]]
    stats = GenerationStats()
    t0 = time.perf_counter()
    texts = predict_sharded(lambda shard: predict(model, tokenizer, shard, cfg, device, stats), items, rank, world)
    if world > 1:  # decoding counts summed over ranks (a collective, like predict_sharded)
        every: list[Any] = [None] * world
        torch.distributed.all_gather_object(every, stats)
        stats = GenerationStats()
        for s in every:
            stats.add(s)
    if texts is None:
        return {}, {}, {}
    seconds = time.perf_counter() - t0
    metrics: dict[str, dict[str, float]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    at = 0
    for name in names:
        n = len(splits[name])
        metrics[name], rows[name] = score(splits[name], texts[at:at + n], cfg)
        at += n
    counts = {gen_key("examples"): float(stats.sequences), gen_key("tokens"): float(stats.generated_tokens),
              gen_key("prompt_tokens"): float(stats.prompt_tokens),
              gen_key("prefill_tokens"): float(stats.prefill_tokens),
              gen_key("prefix_tokens"): float(stats.prefix_tokens), gen_key("batches"): float(stats.batches),
              gen_key("decoders"): float(stats.decoders), gen_key("decode_steps"): float(stats.decode_steps),
              gen_key("prefill_s"): stats.prefill_s, gen_key("decode_s"): stats.decode_s,
              gen_key("kv_reads"): float(stats.kv_reads), gen_key("seconds"): seconds}
    return metrics, rows, counts

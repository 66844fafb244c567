"""Evaluation per task × language: greedy generation (or label scoring), parsing, metrics.

Reports `<task>/<lang>/<metric>` (0–100), `<task>/<lang>/parse_fail` (% of outputs that could
not be parsed; they count as wrong), `<task>/avg` (the headline metric averaged over the
task's languages) and `avg` (the mean of the task averages).

A (task, language) pair the real dataset lacks (PAWS-X has no Hindi, MLQA no French) is not
evaluated and reports nothing — no zero that would drag averages down; `skipped_pairs` lists
those pairs with the reason, for the results to record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from trainables.alignment import Encoded, collate, encode, encode_prompt
from trainables.config import TrialConfig
from trainables.data import available_langs, close_with_eos, fewshot_encoding, load_records, subset
from trainables.models import AnswerSpanLM, causal_lm
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
            pool = load_records(cfg.data, task, lang, "dev") if fewshot else []
            for i, r in enumerate(records):
                if fewshot:
                    enc = fewshot_encoding(tokenizer, task, r, pool, cfg.data.shots[task], cfg.data.seed, i,
                                           cfg.data.max_teacher_len)
                    ids = enc.input_ids[:enc.answer_start]
                else:
                    ids = encode_prompt(tokenizer, render(tokenizer, task, r).prompt)
                items.append(EvalItem(task, lang, r, ids))
    return items


def length_batches(lengths: Sequence[int], batch_size: int, attention_budget: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (shortest first): at most `batch_size` rows
    and rows × width² ≤ `attention_budget`, width being the batch's longest sequence.

    The attention mask and scores of a padded batch hold rows × width² elements, so a fixed row
    count lets one long real prompt (an MLQA context is ~8k tokens for the tiny tokenizer) cost
    gigabytes; a sequence longer than the budget allows still runs, alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        width = lengths[i]  # sorted: the newest member is the widest
        if current is not None and len(current) < batch_size and (len(current) + 1) * width * width <= attention_budget:
            current.append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, prompts: Sequence[tuple[int, ...]], max_new_tokens: int,
             batch_size: int, device: torch.device, attention_budget: int = 2**26) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches of similar length, bounded
    by `length_batches`)."""
    lm = causal_lm(model)
    out: list[str] = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    for idx in length_batches([len(p) + max_new_tokens for p in prompts], batch_size, attention_budget):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            p = prompts[i]
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        gen = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                          do_sample=False, pad_token_id=pad)
        for row, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


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
            device: torch.device) -> list[str]:
    """The model's output text for each item, in order: a greedy continuation, or under
    eval.mode=score the best-scoring answer string of a classification task."""
    was_training = model.training
    model.eval()
    texts = [""] * len(items)
    try:
        for task in dict.fromkeys(it.task for it in items):
            idx = [i for i, it in enumerate(items) if it.task == task]
            if cfg.eval.mode == "score" and get_task(task).choices:
                picks = score_choices(model, tokenizer, [items[i] for i in idx], cfg.eval.batch_size, device)
                got = [" " + p for p in picks]
            else:
                got = generate(model, tokenizer, [items[i].prompt_ids for i in idx], cfg.eval.max_new_tokens[task],
                               cfg.eval.batch_size, device, cfg.eval.attention_budget)
            for i, text in zip(idx, got):
                texts[i] = text
    finally:
        model.train(was_training)
    return texts


def score(items: Sequence[EvalItem], texts: Sequence[str], cfg: TrialConfig) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over items given their output texts, and one prediction row per example."""
    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
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
                metrics[f"{task}/{lang}/{name}"] = float(value)
            metrics[f"{task}/{lang}/parse_fail"] = 100.0 * sum(p.failed for p in parsed) / len(parsed)
            per_lang[lang] = float(scores[HEADLINE_METRIC[task]])
            for (it, text), p, ref in zip(pairs, parsed, refs):
                rows.append({"task": task, "lang": lang, "example_id": it.record["id"], "output": text,
                             "prediction": json.dumps(p.prediction, ensure_ascii=False),
                             "reference": json.dumps(ref, ensure_ascii=False), "parse_failed": p.failed})
        metrics[f"{task}/avg"] = sum(per_lang.values()) / len(per_lang)
    task_avgs = [v for k, v in metrics.items() if k.endswith("/avg")]
    metrics["avg"] = sum(task_avgs) / len(task_avgs) if task_avgs else 0.0
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
    texts = predict_sharded(lambda shard: predict(model, tokenizer, shard, cfg, device), items, rank, world)
    if texts is None:
        return {}, []
    return score(items, texts, cfg)

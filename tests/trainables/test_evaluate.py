"""The evaluation protocol: few-shot prompts draw shots from the same language's dev split, score
mode ranks label strings by their log-likelihood, generation honours each task's token budget,
per-example predictions are kept, and pairs the real data lacks are skipped, not zeroed."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from tests.conftest import XTREME_SAMPLE
from trainables.alignment import encode
from trainables.config import ModelConfig, TrialConfig
from trainables.data import close_with_eos, load_records
from trainables.evaluate import choice_logprobs, eval_items, evaluate, score_choices, skipped_pairs
from trainables.models import load_model
from trainables.prompts import render
from trainables.tasks import get_task
from trainables.tasks.schema import LANGS, TASKS

CPU = torch.device("cpu")
SIZES = {"train": 30, "dev": 30, "test": 30}


def config(**data) -> TrialConfig:
    return TrialConfig.model_validate({"data": {"synthetic_sizes": SIZES, **data}})


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    torch.manual_seed(0)
    return load_model(ModelConfig(name="tiny"), CPU, trainable=False)


@functools.lru_cache(maxsize=None)
def user_turns(task: str, lang: str, split: str) -> frozenset[str]:
    """The query texts of one synthetic split (SIZES records)."""
    return frozenset(get_task(task).user_turn(r) for r in load_records(config().data, task, lang, split))


# =========================================================================== few-shot prompts


@pytest.mark.parametrize("split", ["test", "dev"])
def test_fewshot_shots_come_from_the_same_languages_dev_split(tiny_tokenizer, split):
    cfg = config()
    items = eval_items(cfg, tiny_tokenizer, split, 2, fewshot=True)
    assert len(items) == len(TASKS) * len(LANGS) * 2
    for it in items:
        text = tiny_tokenizer.decode(it.prompt_ids, skip_special_tokens=True)
        k = cfg.data.shots[it.task]
        query = get_task(it.task).user_turn(it.record)
        # k demonstrations, each one answered, then the query and an open "Answer:".
        assert text.count("\nAnswer: ") == k and text.endswith(query + "\nAnswer:")
        shown = text[: -len(query + "\nAnswer:")]
        dev = user_turns(it.task, it.lang, "dev")
        assert sum(turn in shown for turn in dev) == k
        # Never from another split, never from another language, never the query itself.
        assert not any(turn in shown for turn in user_turns(it.task, it.lang, "train"))
        for other in LANGS:
            if other != it.lang:
                assert not any(turn in shown for turn in user_turns(it.task, other, "dev"))
        assert query not in shown


def test_base_prompts_show_no_shots(tiny_tokenizer):
    for it in eval_items(config(), tiny_tokenizer, "test", 2, fewshot=False):
        text = tiny_tokenizer.decode(it.prompt_ids, skip_special_tokens=True)
        assert "\nAnswer: " not in text and text.endswith("\nAnswer:")
        assert text == render(tiny_tokenizer, it.task, it.record).prompt


# =========================================================================== score mode


def direct_logprob(model, prompt_ids: tuple[int, ...], answer_ids: tuple[int, ...]) -> float:
    """Σ log p(answer token | everything before it), from one plain forward pass."""
    ids = torch.tensor([prompt_ids + answer_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[p - 1, ids[0, p]]) for p in range(len(prompt_ids), ids.shape[1]))


@pytest.mark.parametrize("fewshot", [False, True])
def test_score_mode_ranks_label_strings_by_loglikelihood(tiny_model, tiny_tokenizer, fewshot):
    cfg = config(tasks=["nli", "pa"], eval_langs=["zh"])
    items = eval_items(cfg, tiny_tokenizer, "test", 2, fewshot=fewshot)
    eos = close_with_eos(tiny_tokenizer)
    picks = score_choices(tiny_model, tiny_tokenizer, items, 8, CPU)
    for it, pick in zip(items, picks):
        spec = get_task(it.task)
        scores = choice_logprobs(tiny_model, tiny_tokenizer, it, CPU)
        expected = []
        for choice in spec.choices:
            gold = {"label": choice} if it.task == "nli" else {"label": spec.choices.index(choice)}
            rp = render(tiny_tokenizer, it.task, {**it.record, **gold})
            answer = encode(tiny_tokenizer, rp.prompt, rp.answer, eos).answer_ids
            expected.append(direct_logprob(tiny_model, it.prompt_ids, answer))
        assert scores == pytest.approx(expected, abs=1e-4)
        assert pick == spec.choices[max(range(len(expected)), key=expected.__getitem__)]
        assert len(set(round(s, 3) for s in scores)) == len(scores)  # a real ranking, not ties


def test_score_mode_in_evaluate_reports_the_argmax(tiny_model, tiny_tokenizer):
    cfg = config(tasks=["nli", "pa", "ner"], eval_langs=["de"])
    cfg.eval.mode = "score"
    cfg.eval.max_new_tokens = {"ner": 3}
    items = eval_items(cfg, tiny_tokenizer, "test", 2, fewshot=False)
    metrics, rows = evaluate(tiny_model, tiny_tokenizer, items, cfg, CPU)
    classified = [it for it in items if it.task != "ner"]
    chosen = score_choices(tiny_model, tiny_tokenizer, classified, 8, CPU)
    picks = dict(zip((it.record["id"] for it in classified), chosen))
    for row in rows:
        if row["task"] == "nli":
            assert json.loads(row["prediction"]) == picks[row["example_id"]] and not row["parse_failed"]
        elif row["task"] == "pa":
            assert json.loads(row["prediction"]) == ["no", "yes"].index(picks[row["example_id"]])
    assert metrics["nli/de/parse_fail"] == 0.0 and "ner/de/f1" in metrics  # ner still generates
    with pytest.raises(ValueError, match="classification tasks only, not ner"):
        choice_logprobs(tiny_model, tiny_tokenizer, next(it for it in items if it.task == "ner"), CPU)


# =========================================================================== generation


def test_generation_honours_each_tasks_max_new_tokens(tiny_model, tiny_tokenizer, monkeypatch):
    """One pass per task (eval.pool_tasks off): each task's groups decode within its budget."""
    import trainables.generation as generation

    budgets = {"nli": 1, "pa": 2, "qa": 3, "ner": 5, "pos": 7}
    cfg = config(eval_langs=["en", "hi"])
    cfg.eval.max_new_tokens = budgets
    cfg.eval.batch_size = 3
    cfg.eval.stop_strings = []
    cfg.eval.pool_tasks = False
    items = eval_items(cfg, tiny_tokenizer, "test", 2, fewshot=False)
    seen: list[tuple[list[int], int]] = []
    real = generation._decode_stream

    def spy(lm, prompts, row_budgets, *args):
        ids = real(lm, prompts, row_budgets, *args)
        seen.append((list(row_budgets), max(map(len, ids))))
        return ids

    monkeypatch.setattr(generation, "_decode_stream", spy)
    metrics, _ = evaluate(tiny_model, tiny_tokenizer, items, cfg, CPU)
    # Length groups of one task at a time, in task order, each within the task's budget.
    assert [t for b, _ in seen for t in TASKS if set(b) == {budgets[t]}] == sorted(
        (t for b, _ in seen for t in TASKS if set(b) == {budgets[t]}), key=TASKS.index)
    assert {t for b, _ in seen for t in TASKS if set(b) == {budgets[t]}} == set(TASKS) and len(seen) >= len(TASKS)
    assert all(0 < new <= b[0] for b, new in seen)
    # 4 prompts per task through 3 rows → 2 admissions per task, each of ≥ 1 prefill.
    assert metrics["gen/examples"] == len(items) and metrics["gen/batches"] >= 2 * len(TASKS)
    # The prefills ran every prompt token (padding included) but those a shared prefix served.
    assert metrics["gen/prefill_tokens"] + metrics["gen/prefix_tokens"] >= metrics["gen/prompt_tokens"]
    assert metrics["gen/prefix_tokens"] > 0
    assert 0 < metrics["gen/tokens"] <= sum(4 * budgets[t] for t in TASKS)


def test_pooled_tasks_decode_the_same_text_in_fewer_batches(tiny_model, tiny_tokenizer, monkeypatch):
    """eval.pool_tasks (the default): every task's items in one pass, groups mixing tasks, each
    sequence within its own task's budget; the texts equal one pass per task."""
    import trainables.generation as generation

    budgets = {"nli": 1, "pa": 2, "qa": 3, "ner": 5, "pos": 7}
    cfg = config(eval_langs=["en", "hi"])
    cfg.eval.max_new_tokens = budgets
    cfg.eval.stop_strings = []
    cfg.eval.share_prefixes = False  # one prefill per task's prefix would split the pooled admissions too
    assert cfg.eval.pool_tasks is True
    items = eval_items(cfg, tiny_tokenizer, "test", 2, fewshot=False)
    per_task = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"pool_tasks": False})})
    metrics_apart, rows_apart = evaluate(tiny_model, tiny_tokenizer, items, per_task, CPU)
    mixed: list[set[int]] = []
    real = generation._decode_stream

    def spy(lm, prompts, row_budgets, *args):
        ids = real(lm, prompts, row_budgets, *args)
        assert all(len(row) <= b for row, b in zip(ids, row_budgets))  # nobody beyond its own budget
        mixed.append(set(row_budgets))
        return ids

    monkeypatch.setattr(generation, "_decode_stream", spy)
    metrics, rows = evaluate(tiny_model, tiny_tokenizer, items, cfg, CPU)
    assert [r["output"] for r in rows] == [r["output"] for r in rows_apart]
    assert metrics["gen/tokens"] == metrics_apart["gen/tokens"] and metrics["gen/examples"] == len(items)
    assert metrics["gen/batches"] < metrics_apart["gen/batches"] and any(len(b) > 1 for b in mixed)


def test_batched_generation_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    from trainables import generation
    from trainables.generation import greedy_generate

    cfg = config(tasks=["qa"], eval_langs=["en", "zh", "hi"])
    prompts = [it.prompt_ids for it in eval_items(cfg, tiny_tokenizer, "test", 2, fewshot=False)]
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    batched, stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, 6, CPU, 2**30, 16, share_prefixes=False)
    single, single_stats = greedy_generate(tiny_model, tiny_tokenizer, prompts, 6, CPU, 2**30, 1,
                                           share_prefixes=False)
    # One admission (in prefills of similar lengths) against one prefill per prompt.
    runs = generation._prefills([(i, i) for i in range(len(prompts))], prompts)
    assert batched == single and stats.batches == len(runs) < single_stats.batches == len(prompts)


# =========================================================================== predictions, skipped pairs


@pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="shared XTREME sample not present")
def test_real_data_predictions_and_skipped_pairs(tiny_model, tiny_tokenizer):
    cfg = TrialConfig.model_validate({"data": {"source": f"local:{XTREME_SAMPLE}", "tasks": ["pa", "qa", "pos"],
                                               "eval_langs": ["en", "hi", "fr"]},
                                      "eval": {"test_split": "dev", "max_new_tokens": {"qa": 4, "pos": 4}}})
    assert skipped_pairs(cfg) == [("pa", "hi", "PAWS-X has no Hindi"), ("qa", "fr", "MLQA has no French")]
    items = eval_items(cfg, tiny_tokenizer, "dev", 2, fewshot=False)
    pairs = {(it.task, it.lang) for it in items}
    assert pairs == {("pa", "en"), ("pa", "fr"), ("qa", "en"), ("qa", "hi"),
                     ("pos", "en"), ("pos", "hi"), ("pos", "fr")}
    metrics, rows = evaluate(tiny_model, tiny_tokenizer, items, cfg, CPU)
    # Nothing at all is reported for the missing pairs: no zero that would pull averages down.
    assert not any(k.startswith(("pa/hi/", "qa/fr/")) for k in metrics)
    assert metrics["pa/avg"] == pytest.approx((metrics["pa/en/acc"] + metrics["pa/fr/acc"]) / 2)
    assert metrics["qa/avg"] == pytest.approx((metrics["qa/en/f1"] + metrics["qa/hi/f1"]) / 2)
    # One prediction row per example, with its id, raw output, parsed prediction and gold reference.
    assert [r["example_id"] for r in rows] == [it.record["id"] for t in cfg.data.tasks for it in items if it.task == t]
    by_id = {it.record["id"]: it.record for it in items}
    for row in rows:
        assert set(row) == {"task", "lang", "example_id", "output", "prediction", "reference", "parse_failed"}
        record = by_id[row["example_id"]]
        assert json.loads(row["reference"]) == get_task(row["task"]).reference(record)
        json.loads(row["prediction"])
    assert skipped_pairs(config()) == []


# --------------------------------------------------- data-parallel evaluation (gloo ranks)


def _sharded_eval_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    from trainables.models import load_tokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = load_model(ModelConfig(name="tiny"), CPU, trainable=False)
        tok = load_tokenizer(ModelConfig(name="tiny"))
        cfg = config(eval_langs=["en", "zh", "de"])
        items = eval_items(cfg, tok, "test", 3, False)  # 5 tasks × 3 languages × 3 = 45 items
        seen = len(items[rank::world])
        metrics, rows = evaluate(model, tok, items, cfg, CPU, rank, world)
        torch.save({"metrics": metrics, "rows": rows, "seen": seen, "n": len(items)}, f"{out}/{rank}.pt")
        # Leave together, and without tearing gloo down: its threads can abort a rank whose peer has
        # already gone (SIGABRT, "terminate called without an active exception"), even after a
        # barrier (seen in a full run on 2 loaded cores). Nothing is left to flush: results are saved.
        torch.distributed.barrier()
        os._exit(0)
    finally:
        torch.distributed.destroy_process_group()  # reached only when something above failed


@pytest.mark.e2e
@pytest.mark.parametrize("world", [2])
def test_data_parallel_ranks_share_decoding_and_rank0_scores_everything(tiny_model, tiny_tokenizer, world, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sharded_eval_worker, args=(world, port, str(tmp_path)), nprocs=world, join=True)
    got = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    # Every rank decoded a share (45 items over 2 ranks: 23 and 22), only rank 0 has results.
    assert sum(g["seen"] for g in got) == got[0]["n"] == 45
    assert all(g["seen"] >= 45 // world for g in got)
    assert all(g["metrics"] == {} and g["rows"] == [] for g in got[1:])
    # Rank 0's reassembled results are exactly one process evaluating everything.
    cfg = config(eval_langs=["en", "zh", "de"])
    items = eval_items(cfg, tiny_tokenizer, "test", 3, False)
    metrics, rows = evaluate(tiny_model, tiny_tokenizer, items, cfg, CPU)
    # Time and batching differ between one process and two ranks; counts and scores must not.
    per_rank = {"gen/seconds", "gen/batches", "gen/decoders", "gen/decode_steps", "gen/prefill_tokens",
                "gen/prefill_s", "gen/decode_s", "gen/kv_reads"}
    assert {k: v for k, v in got[0]["metrics"].items() if k not in per_rank} == \
        {k: v for k, v in metrics.items() if k not in per_rank}
    assert got[0]["rows"] == rows
    assert {k.split("/")[0] for k in metrics if k.count("/") == 2} == set(TASKS)


def test_splits_decoded_together_score_like_apart_in_fewer_steps(tiny_model, tiny_tokenizer):
    """evaluate_together (the last evaluation's one pass over dev and test): each split's metrics
    and rows equal its own pass's; the pass decodes every item once, in fewer steps than two passes."""
    from trainables.evaluate import evaluate_together

    cfg = config(eval_langs=["en", "hi"])
    cfg.eval.max_new_tokens = {"nli": 2, "pa": 2, "qa": 4, "ner": 6, "pos": 6}
    dev = eval_items(cfg, tiny_tokenizer, "dev", 2, fewshot=False)
    test = eval_items(cfg, tiny_tokenizer, "test", 3, fewshot=False)
    apart = {name: evaluate(tiny_model, tiny_tokenizer, items, cfg, CPU) for name, items in
             (("dev", dev), ("test", test))}
    metrics, rows, counts = evaluate_together(tiny_model, tiny_tokenizer, {"dev": dev, "test": test}, cfg, CPU)
    for name in ("dev", "test"):
        scores = {k: v for k, v in apart[name][0].items() if not k.startswith("gen/")}
        assert metrics[name] == scores and rows[name] == apart[name][1]
        assert not any(k.startswith("gen/") for k in metrics[name])
    assert counts["gen/examples"] == len(dev) + len(test)
    assert counts["gen/tokens"] == apart["dev"][0]["gen/tokens"] + apart["test"][0]["gen/tokens"]
    assert counts["gen/decode_steps"] < apart["dev"][0]["gen/decode_steps"] + apart["test"][0]["gen/decode_steps"]
    assert counts["gen/seconds"] > 0

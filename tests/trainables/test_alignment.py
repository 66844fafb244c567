"""The causal alignment contract: teacher and student targets agree at every aligned position."""

from __future__ import annotations

import pytest
import torch

from trainables.alignment import Encoded, collate, encode, predicting_positions
from trainables.config import ModelConfig, TrialConfig
from trainables.data import close_with_eos, fewshot_encoding
from trainables.models import AnswerSpanLM, load_model
from trainables.prompts import render
from trainables.tasks import synthetic
from trainables.tasks.schema import TASKS

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _student_and_teacher(tokenizer, task: str, n: int = 6) -> tuple[list[Encoded], list[Encoded]]:
    pool = synthetic.generate(task, "en", "train", 40)
    students, teachers = [], []
    for i, r in enumerate(pool[:n]):
        rp = render(tokenizer, task, r)
        students.append(encode(tokenizer, rp.prompt, rp.answer, close_with_eos(tokenizer)))
        teachers.append(fewshot_encoding(tokenizer, task, r, pool, 5 if task != "qa" else 3, 42, i, 4096))
    return students, teachers


@pytest.fixture(params=["plain", "chat"])
def tokenizer(request, tiny_tokenizer):
    if request.param == "plain":
        return tiny_tokenizer
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("s_side,t_side", [("right", "right"), ("left", "left"), ("left", "right"), ("right", "left")])
def test_teacher_and_student_targets_identical(tokenizer, task, s_side, t_side):
    students, teachers = _student_and_teacher(tokenizer, task)
    # The teacher's prompt is longer (k shots) and the prompts differ in length across examples.
    assert all(len(t.input_ids) > len(s.input_ids) for s, t in zip(students, teachers))
    assert len({s.answer_start for s in students}) > 1
    sb = collate(students, tokenizer.pad_token_id, s_side)
    tb = collate(teachers, tokenizer.pad_token_id, t_side)
    assert torch.equal(sb.targets, tb.targets)
    assert torch.equal(sb.rows, tb.rows)
    for b in (sb, tb):
        # Causal: the token right after each predicting position is the target it predicts.
        assert torch.equal(b.input_ids[b.rows, b.cols + 1], b.targets)
        assert bool(b.attention_mask[b.rows, b.cols].all())
    if task in ("qa", "ner", "pos"):
        assert max(s.answer_len for s in students) > 2  # multi-token answers


def test_predicting_positions_and_legacy():
    assert list(predicting_positions(5, 3)) == [4, 5, 6]
    assert list(predicting_positions(5, 3, "legacy")) == [5, 6, 7]
    with pytest.raises(ValueError):
        predicting_positions(0, 2)
    with pytest.raises(ValueError):
        predicting_positions(3, 2, "sideways")


def test_answer_span_logits_match_full_forward_for_either_padding(tiny_tokenizer, tiny_dir):
    model = load_model(ModelConfig(name="tiny"), torch.device("cpu"), trainable=False)
    span = AnswerSpanLM(model)
    students, _ = _student_and_teacher(tiny_tokenizer, "ner", 4)
    out = {}
    for side in ("left", "right"):
        b = collate(students, tiny_tokenizer.pad_token_id, side)
        logits = span(b.input_ids, b.attention_mask, b.position_ids, b.rows, b.cols)
        full = model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
        torch.testing.assert_close(logits, full[b.rows, b.cols], rtol=1e-4, atol=1e-4)
        out[side] = logits
    # Positions count real tokens only, so the padding side does not change the numbers.
    torch.testing.assert_close(out["left"], out["right"], rtol=1e-4, atol=1e-4)


def test_teacher_drops_shots_to_fit(tiny_tokenizer):
    pool = synthetic.generate("qa", "en", "train", 20)
    full = fewshot_encoding(tiny_tokenizer, "qa", pool[0], pool, 3, 42, 0, 100_000)
    short = fewshot_encoding(tiny_tokenizer, "qa", pool[0], pool, 3, 42, 0, len(full.input_ids) - 1)
    assert len(short.input_ids) < len(full.input_ids)
    assert short.answer_ids == full.answer_ids


#: A Llama-3-like template: it writes the BOS itself (as Llama-3's writes <|begin_of_text|>).
BOS_TEMPLATE = "{{ bos_token }}" + CHAT_TEMPLATE


@pytest.mark.parametrize("task", TASKS)
def test_one_bos_when_the_chat_template_writes_it(tiny_tokenizer, task):
    import copy

    from trainables.alignment import encode_prompt

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = BOS_TEMPLATE
    bos = tok.bos_token_id
    assert tok("x", add_special_tokens=True)["input_ids"][0] == bos  # the post-processor adds it too
    students, teachers = _student_and_teacher(tok, task, n=3)
    pool = synthetic.generate(task, "en", "train", 3)
    prompts = [encode_prompt(tok, render(tok, task, r).prompt) for r in pool]
    for enc in students + teachers:
        assert enc.input_ids[0] == bos and enc.input_ids.count(bos) == 1, enc.input_ids[:4]
        assert bos not in enc.answer_ids
    for ids in prompts:
        assert ids[0] == bos and ids.count(bos) == 1
    # A template without a BOS still gets exactly one from the post-processor.
    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = CHAT_TEMPLATE
    s, t = _student_and_teacher(plain, task, n=2)
    assert all(e.input_ids[0] == bos and e.input_ids.count(bos) == 1 for e in s + t)


def _one_by_one(tok, prompt: str, answer: str, eos: bool) -> Encoded:
    """The pair tokenised with two plain tokenizer calls, as encode did before it was batched."""
    written = bool(tok.bos_token) and prompt.startswith(tok.bos_token)
    p = tok(prompt, add_special_tokens=not written)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    return Encoded(tuple(p) + tuple(a), len(p))


@pytest.mark.parametrize("eos", [True, False])
def test_batched_encoding_equals_one_pair_at_a_time(tiny_tokenizer, eos):
    import copy

    from trainables.alignment import encode_many, encode_prompts

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = BOS_TEMPLATE
    pairs = []
    for task in TASKS:
        for r in synthetic.generate(task, "de", "train", 4):
            rp = render(tok, task, r)
            pairs.append((rp.prompt, rp.answer))
    # Mixed: prompts whose text writes the BOS and prompts that do not, in one batch.
    pairs += [(p.removeprefix(tok.bos_token), a) for p, a in pairs[::3]] + [("", "x"), ("plain prompt", " y z")]
    assert any(p.startswith(tok.bos_token) for p, _ in pairs) and not all(p.startswith(tok.bos_token) for p, _ in pairs)
    want = [_one_by_one(tok, p, a, eos) for p, a in pairs]
    assert encode_many(tok, pairs, eos) == want
    assert encode_prompts(tok, [p for p, _ in pairs]) == [w.input_ids[:w.answer_start] for w in want]
    assert encode_many(tok, [], eos) == [] and encode_prompts(tok, []) == []
    with pytest.raises(ValueError, match="empty answer for prompt ending 'abc'"):
        encode_many(tok, [("q", "a"), ("abc", "")], close_with_eos=False)


def test_batched_fewshot_encodings_equal_one_query_at_a_time_also_when_shots_are_dropped(tiny_tokenizer):
    from trainables.data import fewshot_encodings

    pool = synthetic.generate("qa", "en", "train", 30)
    queries = pool[:12]
    full = [fewshot_encoding(tiny_tokenizer, "qa", q, pool, 3, 42, i, 100_000) for i, q in enumerate(queries)]
    # A limit between the lengths: some prompts fit with all their shots, the others drop some.
    limit = sorted(len(e.input_ids) for e in full)[len(full) // 2]
    for max_len in (100_000, limit, 1):
        want = [fewshot_encoding(tiny_tokenizer, "qa", q, pool, 3, 42, i, max_len) for i, q in enumerate(queries)]
        assert fewshot_encodings(tiny_tokenizer, "qa", queries, pool, 3, 42, range(12), max_len) == want
    dropped = fewshot_encodings(tiny_tokenizer, "qa", queries, pool, 3, 42, range(12), limit)
    assert any(len(d.input_ids) < len(f.input_ids) for d, f in zip(dropped, full))
    assert any(d == f for d, f in zip(dropped, full))


def test_teacher_encodings_take_one_task_and_equal_the_single_ones(tiny_tokenizer):
    from trainables.data import teacher_encoding, teacher_encodings, training_pools, training_set

    cfg = TrialConfig.model_validate({"data": {"source": "synthetic", "max_train_per_task": 6, "tasks": ["nli", "ner"]}})
    pools = training_pools(cfg)
    examples = training_set(cfg, tiny_tokenizer, pools)
    ner = [e for e in examples if e.task == "ner"]
    for shots in (True, False):
        assert teacher_encodings(cfg, tiny_tokenizer, ner, pools["ner"], shots) == [
            teacher_encoding(cfg, tiny_tokenizer, e, pools["ner"], shots) for e in ner]
    with pytest.raises(ValueError, match="one task at a time"):
        teacher_encodings(cfg, tiny_tokenizer, examples, pools["ner"], True)

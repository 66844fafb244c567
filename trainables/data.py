"""The examples a trial sees: records from the configured source, the English training pool,
its student and teacher encodings, and the deterministic evaluation subsets.

The teacher-cache builder and every trial call the same functions here, so they agree on
which examples exist and how each is tokenised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from trainables.alignment import Encoded, encode, encode_many
from trainables.config import DataConfig, TrialConfig
from trainables.prompts import render, sample_shots
from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable
from trainables.tasks.schema import LANGS, XTREME_LANGS, Record

__all__ = [
    "DataFormatError", "DataUnavailable", "TrainExample", "available_langs", "check_sources", "close_with_eos",
    "fewshot_encoding", "fewshot_encodings", "load_records", "student_encodings", "subset", "teacher_encoding",
    "teacher_encodings", "training_pools", "training_set",
]


def available_langs(data: DataConfig, task: str) -> tuple[str, ...]:
    """The evaluation languages this source has for `task` (real XTREME lacks pa-hi and qa-fr)."""
    have = LANGS if data.source == "synthetic" else XTREME_LANGS[task]
    return tuple(lang for lang in data.eval_langs if lang in have)


def load_records(data: DataConfig, task: str, lang: str, split: str) -> list[Record]:
    """All records of one task, language and split from the configured source."""
    if data.source == "synthetic":
        from trainables.tasks import synthetic

        return synthetic.generate(task, lang, split, data.synthetic_sizes[split], seed=0)
    from trainables.tasks.loaders import load_split

    return load_split(data.source, task, lang, split)


def check_sources(cfg: TrialConfig) -> None:
    """Load once every split a trial reads (training pools; dev and eval.test_split of each evaluated
    pair), so that missing or unreachable data fails early, in the caller's process, as one line."""
    d = cfg.data
    for task in d.tasks:
        load_records(d, task, d.train_lang, d.train_split)
        for lang in available_langs(d, task):
            for split in dict.fromkeys(("dev", cfg.eval.test_split)):
                load_records(d, task, lang, split)


def subset(records: list[Record], n: int, seed: int) -> list[Record]:
    """A deterministic subset of n records (seeded shuffle, then the first n)."""
    if n >= len(records):
        return list(records)
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    return [records[i] for i in sorted(idx[:n])]


def close_with_eos(tokenizer: Any) -> bool:
    """Whether answers must be closed with EOS by hand (plain-text prompts; chat templates close turns)."""
    return not getattr(tokenizer, "chat_template", None)


@dataclass(frozen=True)
class TrainExample:
    """One training example: its task, index in the task's pool, record and student encoding."""

    task: str
    index: int
    record: Record
    student: Encoded

    @property
    def key(self) -> tuple[str, str]:
        """The (task, example id) pair that keys the teacher cache."""
        return (self.task, self.record["id"])


def training_pools(cfg: TrialConfig) -> dict[str, list[Record]]:
    """Per task, the training records (data.train_split of the training language, at most max_train_per_task)."""
    d = cfg.data
    return {
        task: subset(load_records(d, task, d.train_lang, d.train_split), d.max_train_per_task, d.seed)
        for task in d.tasks
    }


def student_encodings(tokenizer: Any, task: str, records: Sequence[Record]) -> list[Encoded]:
    """The zero-shot (student) encoding of each record of `task`, tokenised in one batch."""
    rendered = [render(tokenizer, task, r) for r in records]
    return encode_many(tokenizer, [(rp.prompt, rp.answer) for rp in rendered], close_with_eos(tokenizer))


def training_set(cfg: TrialConfig, tokenizer: Any, pools: dict[str, list[Record]] | None = None) -> list[TrainExample]:
    """Every training example whose student encoding fits max_student_len, task by task."""
    pools = pools if pools is not None else training_pools(cfg)
    out: list[TrainExample] = []
    for task, pool in pools.items():
        encs = student_encodings(tokenizer, task, pool)
        out += [TrainExample(task, i, r, enc) for i, (r, enc) in enumerate(zip(pool, encs))
                if len(enc.input_ids) <= cfg.data.max_student_len]
    if not out:
        raise ValueError(f"no training example fits data.max_student_len={cfg.data.max_student_len}")
    return out


def fewshot_encoding(
    tokenizer: Any, task: str, query: Record, pool: list[Record], k: int, seed: int, index: int, max_len: int
) -> Encoded:
    """The k-shot encoding of `query`, dropping shots (last first) until it fits `max_len`."""
    shots = sample_shots(pool, k, seed, index, exclude_id=query["id"])
    eos = close_with_eos(tokenizer)
    while True:
        rp = render(tokenizer, task, query, shots)
        enc = encode(tokenizer, rp.prompt, rp.answer, eos)
        if len(enc.input_ids) <= max_len or not shots:
            return enc
        shots = shots[:-1]


def fewshot_encodings(
    tokenizer: Any, task: str, queries: Sequence[Record], pool: list[Record], k: int, seed: int,
    indices: Sequence[int], max_len: int,
) -> list[Encoded]:
    """`fewshot_encoding` of each query (with its index), the k-shot prompts tokenised in one batch;
    only a prompt too long with all its shots is redone one by one."""
    shots = [sample_shots(pool, k, seed, i, exclude_id=q["id"]) for q, i in zip(queries, indices)]
    rendered = [render(tokenizer, task, q, s) for q, s in zip(queries, shots)]
    encs = encode_many(tokenizer, [(rp.prompt, rp.answer) for rp in rendered], close_with_eos(tokenizer))
    return [enc if len(enc.input_ids) <= max_len or not s
            else fewshot_encoding(tokenizer, task, q, pool, k, seed, i, max_len)
            for enc, s, q, i in zip(encs, shots, queries, indices)]


def teacher_encoding(cfg: TrialConfig, tokenizer: Any, ex: TrainExample, pool: list[Record], shots: bool) -> Encoded:
    """The teacher's encoding of a training example: k-shot prompt (shots from the pool) or the student's."""
    return teacher_encodings(cfg, tokenizer, [ex], pool, shots)[0]


def teacher_encodings(cfg: TrialConfig, tokenizer: Any, examples: Sequence[TrainExample], pool: list[Record],
                      shots: bool) -> list[Encoded]:
    """`teacher_encoding` of examples of one task (`pool` is its training pool), batched."""
    if not shots:
        return [ex.student for ex in examples]
    if len({ex.task for ex in examples}) > 1:
        raise ValueError("teacher_encodings takes the examples of one task at a time")
    if not examples:
        return []
    task = examples[0].task
    return fewshot_encodings(tokenizer, task, [ex.record for ex in examples], pool, cfg.data.shots[task],
                             cfg.data.seed, [ex.index for ex in examples], cfg.data.max_teacher_len)

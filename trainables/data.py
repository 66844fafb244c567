"""The examples a trial sees: records from the configured source, the English training pool,
its student and teacher encodings, and the deterministic evaluation subsets.

The teacher-cache builder and every trial call the same functions here, so they agree on
which examples exist and how each is tokenised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from trainables.alignment import Encoded, encode
from trainables.config import DataConfig, TrialConfig
from trainables.prompts import render, sample_shots
from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable
from trainables.tasks.schema import LANGS, XTREME_LANGS, Record

__all__ = [
    "DataFormatError", "DataUnavailable", "TrainExample", "available_langs", "check_sources", "close_with_eos",
    "fewshot_encoding", "load_records", "subset", "teacher_encoding", "training_pools", "training_set",
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


def training_set(cfg: TrialConfig, tokenizer: Any, pools: dict[str, list[Record]] | None = None) -> list[TrainExample]:
    """Every training example whose student encoding fits max_student_len, task by task."""
    pools = pools if pools is not None else training_pools(cfg)
    eos = close_with_eos(tokenizer)
    out: list[TrainExample] = []
    for task, pool in pools.items():
        for i, r in enumerate(pool):
            rp = render(tokenizer, task, r)
            enc = encode(tokenizer, rp.prompt, rp.answer, eos)
            if len(enc.input_ids) <= cfg.data.max_student_len:
                out.append(TrainExample(task, i, r, enc))
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


def teacher_encoding(cfg: TrialConfig, tokenizer: Any, ex: TrainExample, pool: list[Record], shots: bool) -> Encoded:
    """The teacher's encoding of a training example: k-shot prompt (shots from the pool) or the student's."""
    if not shots:
        return ex.student
    k = cfg.data.shots[ex.task]
    return fewshot_encoding(tokenizer, ex.task, ex.record, pool, k, cfg.data.seed, ex.index, cfg.data.max_teacher_len)

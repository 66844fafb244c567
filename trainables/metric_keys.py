"""The results vocabulary: the metric keys a trial reports, their builders and their one parser.

The loop and the evaluator build keys here; `analysis.collect` parses them back into rows of
results.parquet. Nothing else spells a key.

    [test/]<task>/<lang>/<metric>  → split dev|test, task, lang, metric      (`eval_key`)
    [test/]<task>/avg              → lang "avg", metric "headline"           (`eval_key`, lang="avg")
    [test/]avg                     → task "all", lang "avg", metric "headline" (`eval_key`, task="all")
    train/<name>                   → split train, task "all", lang "all", metric name (`train_key`)
    lambda/<task>/mean             → split train, task, lang "all", metric "lambda"   (`lambda_key`)
    diag/<task>/<name>             → split train, task, lang "all", metric name       (`diag_key`)

Reported alongside, but not results (`parse_key` gives None; they stay in result.json):

    [test/]gen/<name>              decoding counts of one evaluation           (`gen_key`)
    mem/<name>                     the trial process's peak memory             (`mem_key`)
    time/<name>                    wall-clock seconds of a phase               (`time_key`)
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from trainables.tasks.schema import LANGS, TASKS

__all__ = ["ALL", "AVG", "HEADLINE", "KeyParts", "diag_key", "eval_key", "gen_key", "lambda_key", "mem_key",
           "on_test", "parse_key", "time_key", "train_key"]

#: A trial's settings use "all" for a pooled task or language; "avg" for an average over languages.
ALL, AVG, HEADLINE = "all", "avg", "headline"


class KeyParts(NamedTuple):
    """Where a reported value goes in results.parquet."""

    split: str  # dev | test | train
    task: str  # a task, or "all"
    lang: str  # a language, "avg" or "all"
    metric: str


def eval_key(task: str, lang: str, metric: str = HEADLINE, split: str = "dev") -> str:
    """An evaluation key: 'ner/hi/f1', 'ner/avg', 'avg', each prefixed 'test/' on the test split."""
    if task == ALL:
        body = AVG
    elif lang == AVG:
        body = f"{task}/{AVG}"
    else:
        body = f"{task}/{lang}/{metric}"
    return f"test/{body}" if split == "test" else body


def on_test(key: str) -> str:
    """The test-split twin of a dev evaluation key: 'ner/avg' → 'test/ner/avg'."""
    return f"test/{key}"


def train_key(name: str) -> str:
    """A training scalar pooled over tasks: 'train/ce'."""
    return f"train/{name}"


def lambda_key(task: str) -> str:
    """The mean λ a policy gave one task's tokens: 'lambda/ner/mean'."""
    return f"lambda/{task}/mean"


def diag_key(task: str, name: str) -> str:
    """A per-task diagnostic: 'diag/ner/teacher_ce'."""
    return f"diag/{task}/{name}"


def gen_key(name: str) -> str:
    """A decoding count of one evaluation: 'gen/tokens' (on_test gives the test split's)."""
    return f"gen/{name}"


def mem_key(name: str) -> str:
    """A peak-memory reading of the trial's process: 'mem/peak_gpu_gb'."""
    return f"mem/{name}"


def time_key(name: str) -> str:
    """Wall-clock seconds of a phase: 'time/eval_s'."""
    return f"time/{name}"


def _split(prefix: str | None) -> str:
    return "test" if prefix else "dev"


_T = "|".join(TASKS)
_L = "|".join(LANGS)
_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], KeyParts]]] = [
    (re.compile(rf"^(test/)?({_T})/({_L})/(\w+)$"), lambda m: KeyParts(_split(m[1]), m[2], m[3], m[4])),
    (re.compile(rf"^(test/)?({_T})/avg$"), lambda m: KeyParts(_split(m[1]), m[2], AVG, HEADLINE)),
    (re.compile(r"^(test/)?avg$"), lambda m: KeyParts(_split(m[1]), ALL, AVG, HEADLINE)),
    (re.compile(r"^train/(\w+)$"), lambda m: KeyParts("train", ALL, ALL, m[1])),
    (re.compile(rf"^lambda/({_T})/mean$"), lambda m: KeyParts("train", m[1], ALL, "lambda")),
    (re.compile(rf"^diag/({_T})/(\w+)$"), lambda m: KeyParts("train", m[1], ALL, m[2])),
]


def parse_key(key: str) -> KeyParts | None:
    """(split, task, lang, metric) of a reported key, or None for keys that are not results."""
    for pattern, make in _PATTERNS:
        m = pattern.match(key)
        if m:
            return make(m)
    return None

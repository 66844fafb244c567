"""The five XTREME tasks: a registry of task specs, data loading and the public metric function."""

from __future__ import annotations

from trainables.tasks.base import Parsed, TaskSpec
from trainables.tasks.schema import LANGS, TASKS


def get_task(name: str) -> TaskSpec:
    """The task spec registered under `name`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    from trainables.tasks import ner, nli, pa, pos, qa

    return {"nli": nli.TASK, "pa": pa.TASK, "qa": qa.TASK, "ner": ner.TASK, "pos": pos.TASK}[name]


def metric(task: str, lang: str, predictions: list, references: list) -> dict[str, float]:
    """Scores (0–100) of parsed predictions against gold references for one task and language."""
    from trainables.tasks.metrics import metric as _metric

    return _metric(task, lang, predictions, references)


__all__ = ["LANGS", "TASKS", "Parsed", "TaskSpec", "get_task", "metric"]

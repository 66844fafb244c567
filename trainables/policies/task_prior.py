"""`task_prior`: λ per task from a dict (the study's Strategy 5: classification high, tagging low)."""

from __future__ import annotations

import torch

from trainables.policies.base import LambdaPolicy, PolicyInputs, task_table
from trainables.tasks.schema import TASKS

#: The study's recommended prior (Strategy 5, as listed under "Next runs").
STUDY_PRIOR: dict[str, float] = {"nli": 0.5, "pa": 0.3, "qa": 0.2, "ner": 0.05, "pos": 0.05}


class TaskPrior(LambdaPolicy):
    """λ_i = lams[task of token i]; every task of the sweep must have a value."""

    name = "task_prior"

    def __init__(self, tasks: list[str], lams: dict[str, float] | None = None) -> None:
        table = task_table(self.name, "lams", STUDY_PRIOR if lams is None else lams)
        missing = [t for t in tasks if t not in table]
        if missing:
            raise ValueError(f"policy task_prior: lams has no value for task(s) {missing} of this sweep")
        self.lams = table
        self.table = torch.tensor([table.get(t, 0.0) for t in TASKS])

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """The task's λ for each token."""
        return self.table.to(inp.task_ids.device)[inp.task_ids]

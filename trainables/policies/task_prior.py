"""`task_prior`: λ per task from a dict (the study's Strategy 5: classification high, tagging low)."""

from __future__ import annotations

import torch

from trainables.policies.base import LambdaPolicy, PolicyInputs
from trainables.tasks.schema import TASKS

#: The study's recommended prior (Strategy 5).
STUDY_PRIOR: dict[str, float] = {"nli": 0.5, "pa": 0.3, "qa": 0.2, "ner": 0.05, "pos": 0.05}


class TaskPrior(LambdaPolicy):
    """λ_i = lams[task of token i]."""

    name = "task_prior"

    def __init__(self, lams: dict[str, float], tasks: list[str]) -> None:
        unknown = [t for t in lams if t not in TASKS]
        if unknown:
            raise ValueError(f"policy task_prior: unknown task(s) {unknown}; allowed: {', '.join(TASKS)}")
        missing = [t for t in tasks if t not in lams]
        if missing:
            raise ValueError(f"policy task_prior: lams has no value for task(s) {missing} of this sweep")
        negative = {t: v for t, v in lams.items() if v < 0}
        if negative:
            raise ValueError(f"policy task_prior: λ must be ≥ 0, got {negative}")
        self.table = torch.tensor([float(lams.get(t, 0.0)) for t in TASKS])

    def weights(self, inp: PolicyInputs) -> torch.Tensor:
        """The task's λ for each token."""
        return self.table.to(inp.task_ids.device)[inp.task_ids]

"""λ policies (λ is the KD weight in loss = CE + λ·KD): a registry from config to policy object."""

from __future__ import annotations

from typing import Any, Callable

from trainables.policies.base import LambdaPolicy, PolicyInputs, per_task_mean
from trainables.policies.fixed import FixedLambda
from trainables.policies.task_prior import STUDY_PRIOR, TaskPrior

_REGISTRY: dict[str, Callable[..., LambdaPolicy]] = {
    "fixed": lambda params, tasks: FixedLambda(**params),
    "task_prior": lambda params, tasks: TaskPrior(params.get("lams", STUDY_PRIOR), tasks),
}
POLICY_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def make_policy(name: str, params: dict[str, Any], tasks: list[str]) -> LambdaPolicy:
    """The λ policy `name` built from its parameters, for a sweep over `tasks`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown λ policy {name!r}; allowed: {', '.join(POLICY_NAMES)}")
    try:
        return _REGISTRY[name](dict(params), tasks)
    except TypeError as err:
        raise ValueError(f"policy {name}: bad parameters {params} ({err})") from None


__all__ = ["LambdaPolicy", "PolicyInputs", "POLICY_NAMES", "make_policy", "per_task_mean"]

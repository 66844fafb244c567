"""λ policies (λ is the KD weight in loss = CE + λ·KD): a registry from config to policy object.

A sweep variant selects one as `policy: {name: ..., params: {...}}`; composite policies nest the
same shape (`inner: {name, params}`, `policies: [{name, params}, ...]`):

    fixed          lam
    task_prior     lams: {task: λ}  (default: the study's Strategy 5 prior)
    entropy        lam_max, normalise: vocab | topk, entropy_source: exact | topk_tail
    grad_conflict  lam, params: all | lora | last_layer, per_task: bool
    loss_ratio     lam0, decay, lam_min, lam_max
    meta           lam_max, lr, every, val_batch, val_per_pair, warm_start: {task: λ}
    schedule       kind: constant | linear | cosine | step | warmup, inner | lam, steps, final, every, gamma
    warmup         steps, inner | lam, final  (= schedule kind warmup)
    product        policies: [policy, ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from trainables.policies.base import (
    ALL_TOKENS,
    DevSpec,
    GradRequest,
    LambdaPolicy,
    PolicyInputs,
    SplitGrads,
    number,
    per_task_mean,
)
from trainables.policies.entropy import EntropyWeighted
from trainables.policies.fixed import FixedLambda
from trainables.policies.grad_conflict import GradConflict
from trainables.policies.loss_ratio import LossRatio
from trainables.policies.meta import MetaLambda
from trainables.policies.product import Product
from trainables.policies.schedule import Schedule
from trainables.policies.task_prior import STUDY_PRIOR, TaskPrior


@dataclass(frozen=True)
class _Entry:
    """How to build one policy: its builder and the parameter names it accepts / requires."""

    build: Callable[[dict[str, Any], list[str]], LambdaPolicy]
    allowed: tuple[str, ...]
    required: tuple[str, ...] = ()


def _nested(policy: str, param: str, spec: Any, tasks: list[str]) -> LambdaPolicy:
    """A policy nested in a composite's parameters ({name, params})."""
    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "params"}:
        raise ValueError(f"policy {policy}: {param} must be a mapping {{name: ..., params: {{...}}}}, got {spec!r}")
    return make_policy(spec["name"], spec.get("params") or {}, tasks)


def _inner(policy: str, params: dict[str, Any], tasks: list[str]) -> LambdaPolicy:
    """The wrapped policy of a schedule: `inner` (a policy) or the shorthand `lam` (fixed λ); pops both."""
    if ("inner" in params) == ("lam" in params):
        raise ValueError(f"policy {policy}: give exactly one of inner (a policy) or lam (a fixed λ)")
    if "lam" in params:
        return FixedLambda(number(policy, "lam", params.pop("lam")))
    return _nested(policy, "inner", params.pop("inner"), tasks)


def _schedule(policy: str, params: dict[str, Any], tasks: list[str], kind: str) -> Schedule:
    inner = _inner(policy, params, tasks)
    return Schedule(inner, kind, alias=policy, **params)


def _product(params: dict[str, Any], tasks: list[str]) -> Product:
    specs = params["policies"]
    if not isinstance(specs, list):
        raise ValueError(f"policy product: policies must be a list of {{name, params}}, got {specs!r}")
    return Product([_nested("product", f"policies[{i}]", s, tasks) for i, s in enumerate(specs)])


_REGISTRY: dict[str, _Entry] = {
    "fixed": _Entry(lambda p, tasks: FixedLambda(**p), ("lam",), ("lam",)),
    "task_prior": _Entry(lambda p, tasks: TaskPrior(tasks, **p), ("lams",)),
    "entropy": _Entry(lambda p, tasks: EntropyWeighted(**p), ("lam_max", "normalise", "entropy_source")),
    "grad_conflict": _Entry(lambda p, tasks: GradConflict(**p), ("lam", "params", "per_task")),
    "loss_ratio": _Entry(lambda p, tasks: LossRatio(**p), ("lam0", "decay", "lam_min", "lam_max")),
    "meta": _Entry(lambda p, tasks: MetaLambda(tasks, **p),
                   ("lam_max", "lr", "every", "val_batch", "val_per_pair", "warm_start")),
    "schedule": _Entry(lambda p, tasks: _schedule("schedule", p, tasks, p.pop("kind")),
                       ("kind", "inner", "lam", "steps", "final", "every", "gamma"), ("kind",)),
    "warmup": _Entry(lambda p, tasks: _schedule("warmup", p, tasks, "warmup"),
                     ("steps", "inner", "lam", "final"), ("steps",)),
    "product": _Entry(_product, ("policies",), ("policies",)),
}
POLICY_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def make_policy(name: str, params: dict[str, Any] | None, tasks: list[str]) -> LambdaPolicy:
    """The λ policy `name` built from its parameters, for a sweep over `tasks`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown λ policy {name!r}; allowed: {', '.join(POLICY_NAMES)}")
    entry = _REGISTRY[name]
    if not isinstance(params or {}, dict):
        raise ValueError(f"policy {name}: params must be a mapping, got {params!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(entry.allowed))
    if unknown:
        raise ValueError(f"policy {name}: unknown parameter(s) {unknown}; allowed: {', '.join(entry.allowed)}")
    missing = [p for p in entry.required if p not in params]
    if missing:
        raise ValueError(f"policy {name}: missing parameter(s) {missing}")
    return entry.build(params, list(tasks))


def check_policy(name: str, params: dict[str, Any] | None) -> None:
    """Raise the policy's ValueError if `name` and `params` cannot build a policy (task coverage aside)."""
    make_policy(name, params, [])


__all__ = [
    "ALL_TOKENS", "DevSpec", "GradRequest", "LambdaPolicy", "PolicyInputs", "POLICY_NAMES", "STUDY_PRIOR", "SplitGrads",
    "check_policy", "make_policy", "per_task_mean",
]

"""The sweep file: one validated model of everything a sweep runs (a preset YAML, plus --set overrides).

A sweep is a table: `variants` are its columns (condition × λ policy), tasks × languages its
rows. `distill_lambdas` is shorthand for fixed-λ distill variants, and unless
`add_baselines: false` every sweep gets its own SFT and control baselines.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from trainables.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    PolicyConfig,
    ResourcesConfig,
    Section,
    TeacherConfig,
    TrainConfig,
    TrialConfig,
    VariantConfig,
    fill_random_corpus,
)
from trainables.metric_keys import ALL, AVG, eval_key


class SearchConfig(Section):
    """How Tune explores and prunes the sweep.

    `grid` runs exactly the listed variants. `optuna` samples `num_samples` more distill trials
    from the policy families (define-by-run, conditional on the family; seeded), after the
    fixed variants. `random` samples one family's Tune space."""

    searcher: Literal["grid", "optuna", "random"] = "grid"
    families: list[str] = Field(default_factory=lambda: ["fixed"], description="policy families searched")
    ranges: dict[str, list[float]] = Field(default_factory=dict, description="e.g. {'fixed.lam': [0.01, 1]}")
    num_samples: int = Field(8, ge=1, le=100_000, description="sampled trials (optuna/random)")
    seed: int = Field(0, ge=0, description="sampler seed: the same seed gives the same trials")
    scheduler: Literal["asha", "none"] = "asha"
    metric: str = Field(eval_key(ALL, AVG), min_length=1, description="a reported metric, e.g. avg or ner/avg")
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, le=10_000, description="evaluations before ASHA may stop a trial")
    reduction_factor: float = Field(2.0, gt=1, le=100)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1, description="training seeds per variant")

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        from search_spaces.spaces import check_families

        try:  # checked for grid too, where they are unused: a wrong name is still a mistake
            check_families(self.families, self.ranges)
        except ValueError as err:
            raise ValueError(str(err)) from None
        if self.searcher == "random" and len(self.families) != 1:
            raise ValueError("search.families: random search takes one family (use optuna for several)")
        return self


class GridConfig(Section):
    """A named grid of distill variants, e.g. {kind: entropy, args: {lam_maxes: [0.1, 0.5]}}."""

    kind: str
    args: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(Section):
    """A whole sweep: shared trial settings, the variants (table columns) and the search."""

    name: str = Field("sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    description: str = ""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    variants: list[VariantConfig] = Field(default_factory=list)
    distill_lambdas: list[float] = Field(default_factory=list, description="fixed-λ distill variants")
    grids: list[GridConfig] = Field(default_factory=list, description="named grids of distill variants")
    control_lambda: float = Field(0.05, ge=0, le=100, description="λ of the added control baseline")
    add_baselines: bool = Field(True, description="add SFT and control(control_lambda) variants when missing")

    @model_validator(mode="after")
    def _check(self) -> "SweepSpec":
        fill_random_corpus(self.model, self.data)
        bad = [lam for lam in self.distill_lambdas if not (0 <= lam <= 100)]
        if bad:
            raise ValueError(f"distill_lambdas must be in [0, 100], got {bad}")
        if self.train.batch_size < self.resources.num_workers:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be ≥ resources.num_workers ({self.resources.num_workers})"
            )
        from trainables.policies import check_policy, make_policy


        for i, v in enumerate(self.variants):
            if v.uses_teacher:
                try:
                    check_policy(v.policy.name, v.policy.params)
                    make_policy(v.policy.name, v.policy.params, self.data.tasks)  # e.g. a prior covering every task
                except ValueError as err:
                    raise ValueError(f"variants.{i}.policy: {str(err).splitlines()[0]}") from None
        if not self.expanded_variants():
            raise ValueError("the sweep has no variants: set variants, distill_lambdas or add_baselines")
        labels = [v.label for v in self.expanded_variants()]
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise ValueError(f"variant labels must be unique, repeated: {dup}")
        return self

    def expanded_variants(self) -> list[VariantConfig]:
        """The sweep's variants: explicit ones, the λ grid, then the SFT and control baselines."""
        out = list(self.variants)
        for lam in self.distill_lambdas:
            out.append(VariantConfig(condition="distill", policy=PolicyConfig(name="fixed", params={"lam": lam})))
        for grid in self.grids:
            from search_spaces.spaces import grid_policies

            for policy in grid_policies(grid.kind, grid.args):
                out.append(VariantConfig(condition="distill", policy=policy, label=grid_label(policy)))
        if self.add_baselines:
            if not any(v.condition == "sft" for v in out):
                out.insert(0, VariantConfig(condition="sft", protected=True))
            if not any(v.condition == "control" for v in out):
                control = VariantConfig(condition="control", protected=True,
                                        policy=PolicyConfig(name="fixed", params={"lam": self.control_lambda}))
                out.insert(1, control)
        # Baselines are never stopped early: the table needs their final numbers.
        return [v.model_copy(update={"protected": True}) if v.condition in ("sft", "control") else v for v in out]

    def trial_configs(self, experiment_dir: str, cache_paths: dict[str, str]) -> list[TrialConfig]:
        """One trial config per variant × seed."""
        trials = []
        for v in self.expanded_variants():
            for seed in self.search.seeds:
                train = self.train.model_copy(update={"seed": seed})
                trials.append(TrialConfig(
                    model=self.model, data=self.data, teacher=self.teacher, train=train, eval=self.eval,
                    resources=self.resources, variant=v, experiment_dir=experiment_dir, cache_paths=cache_paths,
                ))
        return trials

    def teacher_modes(self) -> list[str]:
        """The teacher caches this sweep needs (one per distinct teacher mode)."""
        modes = {v.teacher_mode for v in self.expanded_variants() if v.uses_teacher and v.teacher_mode}
        if self.search.searcher != "grid":
            modes.add("fewshot")  # sampled trials distil from the few-shot teacher
        return sorted(modes)

    def evals_per_trial(self) -> int:
        """How many evaluation reports a full-length training trial makes (ASHA's max_t)."""
        return max(1, math.ceil(self.train.steps / self.train.eval_every))


def grid_label(policy: PolicyConfig) -> str:
    """A label for a grid-made distill variant, e.g. 'distill entropy lam_max=0.5'."""
    parts = []
    for k, v in sorted(policy.params.items()):
        if isinstance(v, dict):
            v = ",".join(f"{t}:{x:g}" for t, x in v.items())
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return f"distill {policy.name} " + " ".join(parts)

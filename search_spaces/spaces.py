"""Declarative λ-policy search spaces, rendered two ways: as Tune parameter spaces (random search)
and as Optuna define-by-run functions (with the conditional branch over policy families).

A sampled point lives under the config key `sampled` as flat names, `policy` (the family) and
`<family>.<param>` (e.g. `entropy.lam_max`); `policy_from_sample` turns it into a PolicyConfig.
Each range is [low, high] and, for KD weights, searched in log space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from trainables.config import PolicyConfig
from trainables.policies import STUDY_PRIOR
from trainables.tasks.schema import TASKS


@dataclass(frozen=True)
class FloatRange:
    """A real parameter in [low, high], optionally log-uniform."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer parameter in [low, high], optionally log-uniform."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """A categorical parameter."""

    options: tuple[Any, ...]


Domain = FloatRange | IntRange | Choice

#: Named task priors for grids: the study's Strategy 5, a flat small λ, a flat large one.
NAMED_PRIORS: dict[str, dict[str, float]] = {
    "study": dict(STUDY_PRIOR),
    "flat_0.05": {t: 0.05 for t in TASKS},
    "flat_0.5": {t: 0.5 for t in TASKS},
    "classification_only": {"nli": 0.5, "pa": 0.5, "qa": 0.0, "ner": 0.0, "pos": 0.0},
}

#: Per family, its searchable parameters and their default ranges.
FAMILIES: dict[str, dict[str, Domain]] = {
    "fixed": {"lam": FloatRange(0.005, 1.0, log=True)},
    "task_prior": {f"lams.{t}": FloatRange(0.005, 1.0, log=True) for t in TASKS},
    "entropy": {"lam_max": FloatRange(0.02, 1.0, log=True), "normalise": Choice(("vocab", "topk"))},
    "warmup": {"steps": IntRange(5, 500, log=True), "lam": FloatRange(0.005, 1.0, log=True)},
    "loss_ratio": {"lam0": FloatRange(0.005, 1.0, log=True), "decay": FloatRange(0.8, 0.995)},
    "meta": {"lam_max": FloatRange(0.1, 1.0, log=True), "lr": FloatRange(0.005, 0.2, log=True),
             "warm_start": Choice(("none", "study"))},
}


def family_domains(family: str, ranges: dict[str, Sequence[float]] | None = None) -> dict[str, Domain]:
    """The domains of one family, with `ranges` ({'fixed.lam': [lo, hi]}) overriding the defaults."""
    if family not in FAMILIES:
        raise ValueError(f"search.families: unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    out = dict(FAMILIES[family])
    for key, bounds in (ranges or {}).items():
        fam, _, name = key.partition(".")
        if fam != family:
            continue
        if name not in out:
            raise ValueError(f"search.ranges: {key!r} is not a parameter of {family}; allowed: "
                             + ", ".join(f"{family}.{n}" for n in out))
        d = out[name]
        if isinstance(d, Choice) or len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ValueError(f"search.ranges: {key!r} needs [low, high] with low < high, got {bounds!r}")
        if d.log and bounds[0] <= 0:
            raise ValueError(f"search.ranges: {key!r} is log-scaled, low must be > 0, got {bounds[0]}")
        out[name] = type(d)(type(d.low)(bounds[0]), type(d.high)(bounds[1]), d.log)
    return out


def check_families(families: Sequence[str], ranges: dict[str, Sequence[float]] | None = None) -> None:
    """Raise ValueError naming the field if a family or range is unknown or malformed."""
    if not families:
        raise ValueError("search.families: give at least one family")
    for fam in families:
        family_domains(fam, ranges)
    for key in ranges or {}:
        if key.partition(".")[0] not in families:
            raise ValueError(f"search.ranges: {key!r} names no family of this search ({', '.join(families)})")


# --------------------------------------------------------------------------- Tune


def tune_space(family: str, ranges: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """A Tune parameter space ({'sampled': {...}}) for random search over one family."""
    from ray import tune

    def domain(d: Domain) -> Any:
        if isinstance(d, Choice):
            return tune.choice(list(d.options))
        if isinstance(d, IntRange):
            return tune.lograndint(d.low, d.high + 1) if d.log else tune.randint(d.low, d.high + 1)
        return tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)

    sampled = {f"{family}.{name}": domain(d) for name, d in family_domains(family, ranges).items()}
    return {"sampled": {"policy": family, **sampled}}


# --------------------------------------------------------------------------- Optuna


def suggest_family(trial: Any, family: str, ranges: dict[str, Sequence[float]] | None = None) -> None:
    """Ask an Optuna trial for one family's parameters (names `sampled/<family>.<param>`)."""
    for name, d in family_domains(family, ranges).items():
        key = f"sampled/{family}.{name}"
        if isinstance(d, Choice):
            trial.suggest_categorical(key, list(d.options))
        elif isinstance(d, IntRange):
            trial.suggest_int(key, d.low, d.high, log=d.log)
        else:
            trial.suggest_float(key, d.low, d.high, log=d.log)


class DefineByRun:
    """An Optuna define-by-run space: pick a family (conditional branch), then its parameters.

    A class, not a closure: Tune pickles the searcher (with this space) at every experiment
    checkpoint, and a local function cannot be pickled."""

    def __init__(self, families: Sequence[str], ranges: dict[str, Sequence[float]] | None,
                 constants: dict[str, Any]) -> None:
        self.families, self.ranges, self.constants = list(families), ranges, constants

    def __call__(self, trial: Any) -> dict[str, Any]:
        """Suggest one point on `trial`; returns the constant part of the config."""
        family = trial.suggest_categorical("sampled/policy", self.families)
        suggest_family(trial, family, self.ranges)
        return dict(self.constants)


def define_by_run(families: Sequence[str], ranges: dict[str, Sequence[float]] | None,
                  constants: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    """An Optuna define-by-run space: pick a family (conditional branch), then its parameters."""
    check_families(families, ranges)
    return DefineByRun(families, ranges, constants)


# --------------------------------------------------------------------------- sample → policy


def policy_from_sample(sampled: dict[str, Any]) -> PolicyConfig:
    """The PolicyConfig a sampled point describes ({'policy': family, '<family>.<param>': value})."""
    family = sampled.get("policy")
    if family not in FAMILIES:
        raise ValueError(f"sampled policy family {family!r} unknown; allowed: {', '.join(FAMILIES)}")
    values = {k.split(".", 1)[1]: v for k, v in sampled.items() if k.startswith(family + ".")}
    if family == "task_prior":
        return PolicyConfig(name="task_prior", params={"lams": {k.split(".", 1)[1]: float(v) for k, v in values.items()}})
    if family == "meta":
        warm = values.pop("warm_start", "none")
        params = {k: float(v) for k, v in values.items()}
        if warm == "study":
            # A warm start must lie below λ_max: scale the prior into it when it does not.
            top = max(STUDY_PRIOR.values())
            scale = min(1.0, 0.9 * params["lam_max"] / top)
            params["warm_start"] = {t: v * scale for t, v in STUDY_PRIOR.items()}
        return PolicyConfig(name="meta", params=params)
    if family == "warmup":
        return PolicyConfig(name="warmup", params={"steps": int(values["steps"]), "lam": float(values["lam"])})
    return PolicyConfig(name=family, params=values)


def sample_label(sampled: dict[str, Any]) -> str:
    """A short label for a sampled trial, e.g. 'distill entropy lam_max=0.31 normalise=vocab'."""
    family = sampled.get("policy", "?")
    parts = []
    for k, v in sorted(sampled.items()):
        if k.startswith(family + "."):
            name = k.split(".", 1)[1]
            parts.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return f"distill {family} " + " ".join(parts)


# --------------------------------------------------------------------------- grids


def fixed_lambda_grid(lams: Sequence[float]) -> list[PolicyConfig]:
    """Fixed-λ policies, one per value."""
    return [PolicyConfig(name="fixed", params={"lam": float(lam)}) for lam in lams]


def task_prior_grid(names: Sequence[str]) -> list[PolicyConfig]:
    """Task-prior policies from named priors (NAMED_PRIORS)."""
    bad = [n for n in names if n not in NAMED_PRIORS]
    if bad:
        raise ValueError(f"unknown named prior(s) {bad}; allowed: {', '.join(NAMED_PRIORS)}")
    return [PolicyConfig(name="task_prior", params={"lams": dict(NAMED_PRIORS[n])}) for n in names]


def entropy_grid(lam_maxes: Sequence[float], normalise: str = "vocab") -> list[PolicyConfig]:
    """Entropy-weighted policies, one per λ_max."""
    return [PolicyConfig(name="entropy", params={"lam_max": float(x), "normalise": normalise}) for x in lam_maxes]


def warmup_grid(steps: Sequence[int], lam: float) -> list[PolicyConfig]:
    """KD warm-up policies (λ for the first N steps, then 0), one per N."""
    return [PolicyConfig(name="warmup", params={"steps": int(n), "lam": float(lam)}) for n in steps]


def loss_ratio_grid(lam0s: Sequence[float], decay: float = 0.9) -> list[PolicyConfig]:
    """Loss-ratio policies, one per λ_0."""
    return [PolicyConfig(name="loss_ratio", params={"lam0": float(x), "decay": decay}) for x in lam0s]


def meta_grid(lam_maxes: Sequence[float], lrs: Sequence[float], warm_starts: Sequence[str | None] = (None,)) -> list[PolicyConfig]:
    """Meta-λ policies over λ_max × meta lr × warm start (a named prior or None)."""
    out = []
    for lam_max in lam_maxes:
        for lr in lrs:
            for warm in warm_starts:
                params: dict[str, Any] = {"lam_max": float(lam_max), "lr": float(lr)}
                if warm:
                    params["warm_start"] = dict(task_prior_grid([warm])[0].params["lams"])
                out.append(PolicyConfig(name="meta", params=params))
    return out


GRIDS: dict[str, Callable[..., list[PolicyConfig]]] = {
    "fixed": fixed_lambda_grid, "task_prior": task_prior_grid, "entropy": entropy_grid,
    "warmup": warmup_grid, "loss_ratio": loss_ratio_grid, "meta": meta_grid,
}


def grid_policies(kind: str, args: dict[str, Any]) -> list[PolicyConfig]:
    """The policies of a named grid (`grids: [{kind: entropy, args: {lam_maxes: [...]}}]` in a sweep)."""
    if kind not in GRIDS:
        raise ValueError(f"grids: unknown kind {kind!r}; allowed: {', '.join(GRIDS)}")
    try:
        return GRIDS[kind](**args)
    except TypeError as err:
        raise ValueError(f"grids: {kind} takes different arguments ({err})") from None


def resolved_trial(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial config's `trial` dict with a sampled point (if any) applied to its variant."""
    trial = dict(config.get("trial", {}))
    sampled = config.get("sampled")
    if sampled:
        variant = dict(trial.get("variant", {}))
        variant["policy"] = policy_from_sample(sampled).model_dump()
        variant["label"] = sample_label(sampled)
        trial["variant"] = variant
    return trial

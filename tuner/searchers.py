"""Search algorithms of a sweep: grid variants, Optuna over policy families, and the wrapper that
runs the sweep's baselines before any sampled trial."""

from __future__ import annotations

import copy
import pickle
from typing import Any

from ray.tune.search import Searcher


class BaselinesFirst(Searcher):
    """Suggests fixed trial configs (the SFT and control baselines, explicit variants) first, then
    defers to an inner searcher. The inner searcher never sees the fixed trials' results, so they
    do not bias its model of the space."""

    def __init__(self, inner: Searcher, fixed: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.fixed = list(fixed)
        self.issued = 0
        self.fixed_ids: set[str] = set()
        super().__init__(metric=inner.metric, mode=inner.mode)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Pass the metric and mode to the inner searcher."""
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Let Tune's ConcurrencyLimiter do the limiting."""
        return False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next fixed config while any is left, then the inner searcher's suggestion."""
        if self.issued < len(self.fixed):
            cfg = copy.deepcopy(self.fixed[self.issued])
            self.issued += 1
            self.fixed_ids.add(trial_id)
            return cfg
        return self.inner.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Forward intermediate results of sampled trials only."""
        if trial_id not in self.fixed_ids:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Forward completions of sampled trials only."""
        if trial_id not in self.fixed_ids:
            self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        """Persist this wrapper and the inner searcher's state (for --resume)."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"fixed": self.fixed, "issued": self.issued, "fixed_ids": self.fixed_ids}, f)
        self.inner.save(checkpoint_path + ".inner")

    def restore(self, checkpoint_path: str) -> None:
        """Restore what `save` wrote."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.fixed, self.issued, self.fixed_ids = state["fixed"], state["issued"], state["fixed_ids"]
        self.inner.restore(checkpoint_path + ".inner")


class SeededRandom(Searcher):
    """Random search over a Tune space (tune.uniform, tune.choice, …) as a Searcher, so that it can
    sit inside `BaselinesFirst`; one numpy RNG seeded once makes a sweep's draws reproducible.

    Tune's `BasicVariantGenerator` is a SearchAlgorithm, not a Searcher (no metric/mode, no
    suggest), so it cannot be wrapped."""

    def __init__(self, space: dict[str, Any], seed: int, metric: str | None = None, mode: str | None = None) -> None:
        import numpy as np

        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.rng = np.random.RandomState(seed)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Take the metric and mode from the TuneConfig (the space is fixed at construction)."""
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """One config drawn from the space."""
        from ray.tune.search.variant_generator import generate_variants

        _, config = next(generate_variants(copy.deepcopy(self.space), random_state=self.rng))
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Random search learns nothing from results."""

    def save(self, checkpoint_path: str) -> None:
        """Persist the RNG state (for --resume)."""
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.rng.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Restore what `save` wrote."""
        with open(checkpoint_path, "rb") as f:
            self.rng.set_state(pickle.load(f))

"""Search spaces: grids, Tune spaces and Optuna define-by-run spaces that build valid policies."""

from __future__ import annotations

import optuna
import pytest
from ray.tune.search.sample import Domain
from ray.tune.utils.util import unflatten_dict

from search_spaces import spaces
from trainables.policies import make_policy
from trainables.tasks.schema import TASKS


def _sample(space, seed: int, n: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial)
        point = unflatten_dict({**trial.params, **constants})
        out.append(point)
        study.tell(trial, 0.0)
    return out


def test_define_by_run_builds_valid_policies_for_every_family():
    families = list(spaces.FAMILIES)
    points = _sample(spaces.define_by_run(families, {}, {"trial": {"x": 1}}), seed=3, n=40)
    seen = set()
    for p in points:
        assert p["trial"] == {"x": 1}
        family = p["sampled"]["policy"]
        seen.add(family)
        # Conditional branch: only the chosen family's parameters were asked for.
        assert all(k == "policy" or k.startswith(family + ".") for k in p["sampled"])
        policy = spaces.policy_from_sample(p["sampled"])
        make_policy(policy.name, policy.params, list(TASKS))
    assert seen == set(families)


def test_optuna_space_is_reproducible_with_a_seed_and_respects_ranges():
    space = spaces.define_by_run(["fixed", "entropy"], {"fixed.lam": [0.02, 0.1]}, {})
    a, b = _sample(space, 7, 12), _sample(space, 7, 12)
    assert a == b
    assert a != _sample(space, 8, 12)
    lams = [p["sampled"]["fixed.lam"] for p in a if p["sampled"]["policy"] == "fixed"]
    assert lams and all(0.02 <= x <= 0.1 for x in lams)


def test_tune_space_has_log_domains():
    s = spaces.tune_space("task_prior")
    assert s["sampled"]["policy"] == "task_prior"
    doms = {k: v for k, v in s["sampled"].items() if k != "policy"}
    assert set(doms) == {f"task_prior.lams.{t}" for t in TASKS}
    assert all(isinstance(d, Domain) for d in doms.values())
    x = doms["task_prior.lams.ner"].sample()
    assert 0.005 <= x <= 1.0


def test_meta_warm_start_stays_below_lam_max():
    p = spaces.policy_from_sample({"policy": "meta", "meta.lam_max": 0.3, "meta.lr": 0.05, "meta.warm_start": "study"})
    assert max(p.params["warm_start"].values()) < 0.3
    make_policy(p.name, p.params, list(TASKS))


def test_grids():
    assert [p.params["lam"] for p in spaces.fixed_lambda_grid([0.05, 0.5])] == [0.05, 0.5]
    assert spaces.task_prior_grid(["study"])[0].params["lams"]["ner"] == 0.05
    assert len(spaces.meta_grid([0.6, 1.0], [0.01, 0.05], [None, "study"])) == 8
    with pytest.raises(ValueError, match="warm_start"):
        spaces.meta_grid([0.5], [0.05], ["study"])  # the prior's nli 0.5 is not below λ_max 0.5
    assert spaces.warmup_grid([100], 0.05)[0].params == {"steps": 100, "lam": 0.05}
    for p in (spaces.entropy_grid([0.5]) + spaces.loss_ratio_grid([0.1]) + spaces.meta_grid([1.0], [0.05], ["study"])):
        make_policy(p.name, p.params, list(TASKS))


@pytest.mark.parametrize("families, ranges, match", [
    (["nope"], {}, "unknown family 'nope'"),
    ([], {}, "at least one family"),
    (["fixed"], {"fixed.lam": [1.0, 0.1]}, "low < high"),
    (["fixed"], {"fixed.lam": [0.0, 0.1]}, "log-scaled"),
    (["fixed"], {"fixed.eta": [0.1, 0.2]}, "not a parameter of fixed"),
    (["fixed"], {"entropy.lam_max": [0.1, 0.2]}, "names no family"),
])
def test_bad_spaces_are_one_clear_error(families, ranges, match):
    with pytest.raises(ValueError, match=match):
        spaces.check_families(families, ranges)
    with pytest.raises(ValueError, match="unknown named prior"):
        spaces.task_prior_grid(["nope"])

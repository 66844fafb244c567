"""Sweep assembly: teacher caches once, then every variant as a Tune trial (grid + ASHA),
then the tidy results file and the Δ-vs-SFT table.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tuner.spec import SweepSpec

CACHE_DIRNAME = "teacher_cache"


def default_storage() -> Path:
    """Where sweeps are stored by default: $LAMTUNE_STORAGE, else ~/lamtune_results."""
    return Path(os.environ.get("LAMTUNE_STORAGE", Path.home() / "lamtune_results")).expanduser()


@dataclass
class SweepOutcome:
    """What a finished sweep leaves behind."""

    experiment_dir: Path
    results_path: Path
    table_markdown: str
    errors: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- Ray


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return
    # Trial drivers mostly wait on their workers, so logical CPUs = 2 × cores lets two trials run
    # side by side on a laptop, each worker holding one core.
    ray.init(num_cpus=num_cpus or 2 * (os.cpu_count() or 1), log_to_driver=False,
             include_dashboard=os.environ.get("LAMTUNE_DASHBOARD", "0") == "1")


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """CPUs and GPUs one trial holds: its driver (1 CPU) plus its workers."""
    r = spec.resources
    res = {"CPU": 1.0 + r.num_workers * r.cpus_per_worker}
    if r.use_gpu:
        res["GPU"] = r.num_workers * r.gpus_per_worker
    return res


def max_concurrent(spec: SweepSpec, cluster: dict[str, float]) -> int:
    """How many trials fit on the cluster at once, so none sits holding CPUs while waiting for GPUs."""
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    need = trial_resources(spec)
    fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    return max(1, min(fits) if fits else 1)


# --------------------------------------------------------------------------- teacher caches


def build_caches(spec: SweepSpec, cache_root: Path, out: TextIO) -> dict[str, str]:
    """Build every teacher cache the sweep needs, once, as Ray tasks; returns mode → directory."""
    import ray

    from trainables.config import TrialConfig
    from trainables.teacher.build import build_cache, cache_dir
    from trainables.teacher.cache import is_complete

    base = TrialConfig(model=spec.model, data=spec.data, teacher=spec.teacher, train=spec.train)
    paths: dict[str, str] = {}
    pending = {}
    remote = ray.remote(build_cache)
    for mode in spec.teacher_modes():
        target = cache_dir(base, cache_root, mode)
        paths[mode] = str(target)
        if is_complete(target):
            print(f"teacher cache [{mode}] found: {target}", file=out)
            continue
        print(f"teacher cache [{mode}] building: {target}", file=out)
        gpu = 1 if spec.teacher.use_gpu else 0
        pending[mode] = remote.options(num_cpus=1, num_gpus=gpu).remote(base, cache_root, mode)
    t0 = time.perf_counter()
    for mode, ref in pending.items():
        ray.get(ref)
        print(f"teacher cache [{mode}] ready ({time.perf_counter() - t0:.0f}s)", file=out)
    return paths


# --------------------------------------------------------------------------- Tune


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    if spec.search.scheduler == "none":
        return None

    class BaselineSafeASHA(AsyncHyperBandScheduler):
        """ASHA that never stops protected trials (the SFT and control baselines)."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if trial.config.get("trial", {}).get("variant", {}).get("protected"):
                return TrialScheduler.CONTINUE
            return decision

    # time_attr is the evaluation index: grace_period counts evaluations, not steps, so with
    # eval_every=100 a grace period of 2 lets every trial train 200 steps before a cut.
    return BaselineSafeASHA(time_attr="eval_index", max_t=spec.evals_per_trial(),
                            grace_period=min(spec.search.grace_period, spec.evals_per_trial()),
                            reduction_factor=spec.search.reduction_factor)


def _progress_callback(out: TextIO) -> Any:
    from ray.tune import Callback

    class Progress(Callback):
        """One line per report, completion and failure."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()

        def _label(self, trial: Any) -> str:
            return trial.config.get("trial", {}).get("variant", {}).get("label", trial.trial_id)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            ce, kd = result.get("train/ce"), result.get("train/kd")
            losses = f" ce {ce:.3f} kd {kd:.3f}" if ce is not None and kd is not None else ""
            test = f" test avg {result['test/avg']:.1f}" if "test/avg" in result else ""
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} step {result.get('step', 0):>5}"
                  f"  dev avg {result.get('avg', float('nan')):5.1f}{losses}{test}", file=out, flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} done", file=out, flush=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} FAILED (see {trial.local_path})",
                  file=out, flush=True)

    return Progress()


def run_sweep(spec: SweepSpec, storage: Path | None = None, resume: bool = False,
              out: TextIO = sys.stdout) -> SweepOutcome:
    """Run the whole sweep and return where its results and table are."""
    import ray
    from ray import tune

    from analysis.tables import TableError, delta_vs_sft, headline_scores, to_markdown
    from trainables.models import ensure_tiny_model, load_tokenizer
    from trainables.trainable import run_trial
    from tuner.results import write_results

    storage = Path(storage or default_storage()).expanduser().resolve()
    experiment_dir = storage / spec.name
    storage.mkdir(parents=True, exist_ok=True)
    init_ray()
    if spec.model.name == "tiny":
        ensure_tiny_model(spec.model.tiny)
    load_tokenizer(spec.model)  # fail fast, in one line, when the model cannot be reached

    cache_root = Path(spec.teacher.cache_dir).expanduser() if spec.teacher.cache_dir else storage / CACHE_DIRNAME
    cache_paths = build_caches(spec, cache_root, out)
    trials = spec.trial_configs(str(experiment_dir), cache_paths)
    concurrent = max_concurrent(spec, ray.cluster_resources())
    print(f"sweep {spec.name}: {len(trials)} trials, up to {concurrent} at a time -> {experiment_dir}", file=out)

    trainable = tune.with_resources(run_trial, {"CPU": 1})
    if resume and tune.Tuner.can_restore(str(experiment_dir)):
        tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.model_dump() for t in trials])},
            tune_config=tune.TuneConfig(metric=spec.search.metric, mode=spec.search.mode,
                                        scheduler=_scheduler(spec), max_concurrent_trials=concurrent,
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(name=spec.name, storage_path=str(storage), verbose=0,
                                      callbacks=[_progress_callback(out)],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    grid = tuner.fit()
    errors = {r.path: _one_line(r.error) for r in grid if r.error is not None}

    results_path = write_results(experiment_dir)
    import pandas as pd

    try:
        table = to_markdown(delta_vs_sft(headline_scores(pd.read_parquet(results_path))))
    except TableError as err:
        table = f"(no table: {err})"
    return SweepOutcome(experiment_dir, results_path, table, errors)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"

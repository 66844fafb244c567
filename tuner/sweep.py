"""Sweep assembly: teacher caches once, then every variant as a Tune trial (grid + ASHA),
then the tidy results file and the Δ-vs-SFT table.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trainables.gpu_slots import ahead, ray_gpu_fraction
from trainables.metric_keys import ALL, AVG, eval_key, mem_key, train_key
from tuner.gpu_sharing import resolve_gpu_sharing
from tuner.storage import check_storage
from tuner.spec import SweepSpec

CACHE_DIRNAME = "teacher_cache"


def default_storage() -> Path:
    """Where sweeps are stored by default: $LAMTUNE_STORAGE, else ~/lamtune_results."""
    return Path(os.environ.get("LAMTUNE_STORAGE", Path.home() / "lamtune_results")).expanduser()


class ExperimentExists(ValueError):
    """The experiment directory already holds a sweep and --resume was not given."""


@dataclass
class SweepOutcome:
    """What a finished sweep leaves behind."""

    experiment_dir: Path
    results_path: Path
    table_markdown: str
    table_note: str = ""  # what the table's ± and [low, high] mean, or why there is no interval
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- Ray


def init_ray(num_cpus: int | None = None) -> str | None:
    """Connect to the cluster in RAY_ADDRESS (e.g. under `ray job submit`), else start a local Ray;
    returns the dashboard URL when a dashboard runs."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            # Trial drivers mostly wait on their workers, so logical CPUs = 2 × cores lets two
            # trials run side by side on a laptop, each worker holding one core.
            ray.init(num_cpus=num_cpus or 2 * (os.cpu_count() or 1), log_to_driver=False,
                     include_dashboard=os.environ.get("LAMTUNE_DASHBOARD", "0") == "1")
    try:
        url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), "dashboard_url") else None
        url = url or ray._private.worker.global_worker.node.address_info.get("webui_url")
    except Exception:  # no dashboard (ray without the default extra, or disabled)
        url = None
    return f"http://{url}" if url and not str(url).startswith("http") else url


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """CPUs and GPUs one trial holds: its driver (1 CPU) plus its workers."""
    r = spec.resources
    res = {"CPU": 1.0 + r.num_workers * r.cpus_per_worker}
    if r.use_gpu:  # a trial started ahead of a free GPU slot holds its share of Ray's GPU (trainables/gpu_slots.py)
        res["GPU"] = r.num_workers * ray_gpu_fraction(r)
    return res


def max_concurrent(spec: SweepSpec, cluster: dict[str, float]) -> int:
    """How many trials fit on the cluster at once, so none sits holding CPUs while waiting for GPUs."""
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    need = trial_resources(spec)
    fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    return max(1, min(fits) if fits else 1)


# --------------------------------------------------------------------------- teacher caches


class CacheBuilds:
    """The teacher-cache builds a sweep started (Ray tasks), watched from a thread of the driver:
    each prints a line when ready; one that fails writes its reason beside its cache (the marker
    trials waiting for it read, `trainables.teacher.cache.wait_for_cache`) and prints it."""

    def __init__(self, paths: dict[str, str], pending: dict[tuple[str, ...], Any], out: TextIO) -> None:
        import threading

        self.paths, self.out = paths, out
        self.building = frozenset(m for group in pending for m in group)  # modes built by this sweep
        self.failed: dict[str, str] = {}  # mode -> one-line reason
        self._thread = threading.Thread(target=self._watch, args=(pending,), daemon=True, name="cache-builds")
        self._thread.start()

    def _watch(self, pending: dict[tuple[str, ...], Any]) -> None:
        import ray

        from trainables.failures import one_line
        from trainables.teacher.cache import failed_marker

        t0 = time.perf_counter()
        for group, ref in pending.items():
            try:
                ray.get(ref)
            except Exception as err:  # noqa: BLE001 - any failure of the task: its trials must hear of it
                reason = one_line(err)
                for mode in group:
                    self.failed[mode] = reason
                    failed_marker(self.paths[mode]).write_text(reason + "\n")
                    print(f"teacher cache [{mode}] FAILED: {reason}", file=self.out, flush=True)
                continue
            for mode in group:
                print(f"teacher cache [{mode}] ready ({time.perf_counter() - t0:.0f}s)"
                      f"{_build_rate(self.paths[mode])}", file=self.out, flush=True)

    def wait(self) -> dict[str, str]:
        """Block until every build has ended; mode → directory, or a CacheBuildFailed naming the failures."""
        self._thread.join()
        if self.failed:
            raise CacheBuildFailed("; ".join(f"teacher cache [{m}]: {r}" for m, r in sorted(self.failed.items())))
        return self.paths


class CacheBuildFailed(RuntimeError):
    """A teacher-cache build failed (its one-line reason)."""


def start_cache_builds(spec: SweepSpec, cache_root: Path, out: TextIO, gpu_cap: float | None = None,
                       experiment_dir: str = "") -> CacheBuilds:
    """Start building, as Ray tasks, every teacher cache the sweep needs and lacks; return at once.

    Trials may start meanwhile: one that needs a cache loads its model, then waits for it. With
    `gpu_cap` (a trial's GPU share asked of Ray) a build asks for no more of a GPU than one trial
    does, so trials start beside it instead of after it; where trials start ahead of a free GPU
    slot, such a build takes one of `experiment_dir`'s slots too (trainables/gpu_slots.py)."""
    import ray

    from trainables.config import TrialConfig
    from trainables.teacher.build import build_caches as build_teacher_caches
    from trainables.teacher.build import cache_dir, cache_problem
    from trainables.teacher.cache import failed_marker

    base = TrialConfig(model=spec.model, data=spec.data, teacher=spec.teacher, train=spec.train)
    if "checkpoint" in spec.teacher_modes() and spec.teacher.checkpoint:
        from trainables.models import load_tokenizer
        from trainables.teacher.checkpoint import check_tokenizer

        check_tokenizer(spec.teacher.checkpoint, load_tokenizer(spec.model))  # one line, before any build
    paths: dict[str, str] = {}
    pending = {}
    # max_calls=1: the worker process exits after its builds, so the teacher's GPU memory goes back
    # to the trials (an idle cache worker once held 53.6 GB of an H200 for a whole sweep).
    remote = ray.remote(max_calls=1)(build_teacher_caches)
    to_build: dict[str, str] = {}
    for mode in spec.teacher_modes():
        target = cache_dir(base, cache_root, mode)
        paths[mode] = str(target)
        problem = cache_problem(target)  # checksums verified: a damaged cache is never used
        if problem is None:
            print(f"teacher cache [{mode}] found: {target}", file=out)
            continue
        to_build[mode] = "" if problem == "missing" else f" (the one there is {problem})"
        failed_marker(target).unlink(missing_ok=True)  # an earlier sweep's failure is not this one's
    gpus = ray.cluster_resources().get("GPU", 0.0) if spec.teacher.use_gpu else 0.0
    groups = cache_build_groups(list(to_build), gpus)
    gpu = cache_gpu_share(len(groups), gpus) if spec.teacher.use_gpu else 0
    if gpu and gpu_cap:
        gpu = min(gpu, gpu_cap)
    if gpu and ahead(spec.resources):  # it counts as one of its GPU's trials (asks Ray for no more than one)
        base = base.model_copy(update={"experiment_dir": experiment_dir, "resources": spec.resources})
    for group in groups:
        for mode in group:
            print(f"teacher cache [{mode}] building: {paths[mode]}{to_build[mode]}", file=out)
        pending[tuple(group)] = remote.options(num_cpus=1, num_gpus=gpu).remote(base, cache_root, group)
    return CacheBuilds(paths, pending, out)


def build_caches(spec: SweepSpec, cache_root: Path, out: TextIO) -> dict[str, str]:
    """Build every teacher cache the sweep needs, once, as Ray tasks, and wait; returns mode → directory."""
    return start_cache_builds(spec, cache_root, out).wait()


def cache_build_groups(modes: list[str], gpus: float) -> list[list[str]]:
    """The cache builds as Ray tasks: one per mode when every build can have a GPU of its own, else
    the modes with the same teacher weights (fewshot, zeroshot: the base model) in one task, which
    loads and compiles the teacher once and has its GPU alone instead of time-sliced with another
    build (on one H200 two concurrent builds ran at 34% and 16% of the bf16 peak, study run 5)."""
    if not modes:
        return []
    if int(gpus) >= len(modes):
        return [[m] for m in modes]
    base = [m for m in modes if m != "checkpoint"]
    return [g for g in (base, [m for m in modes if m == "checkpoint"]) if g]


def cache_gpu_share(builds: int, gpus: float) -> float:
    """GPUs each of `builds` concurrent cache-build tasks asks for: a whole one when there are
    enough, else a share of those there are (a checkpoint teacher's build beside the base model's)."""
    if builds <= 0:
        return 0.0
    return 1.0 / math.ceil(builds / max(1, int(gpus)))


def _build_rate(directory: str) -> str:
    """', N teacher tok/s on DEVICE' from a finished cache's build statistics ('' when absent)."""
    meta = Path(directory) / "manifest.json"
    try:
        stats = json.loads(meta.read_text()).get("stats", {})
        return f", {stats['teacher_tokens'] / stats['seconds']:,.0f} teacher tok/s on {stats['device']}"
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return ""


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
            from search_spaces.spaces import resolved_trial

            return resolved_trial(trial.config).get("variant", {}).get("label", trial.trial_id)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            ce, kd = result.get(train_key("ce")), result.get(train_key("kd"))
            losses = f" ce {ce:.3f} kd {kd:.3f}" if ce is not None and kd is not None else ""
            test_avg, peak = eval_key(ALL, AVG, split="test"), mem_key("peak_gpu_gb")
            test = f" test avg {result[test_avg]:.1f}" if test_avg in result else ""
            test += f" mem {result[peak]:.1f} GB" if peak in result else ""
            dev_avg = result.get(eval_key(ALL, AVG), float("nan"))
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} step {result.get('step', 0):>5}"
                  f"  dev avg {dev_avg:5.1f}{losses}{test}", file=out, flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} done", file=out, flush=True)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            """Tune retries the trial: say why and record it, unless it had failed for good (then the
            retry only repeats its reason, at once)."""
            import ray

            from trainables.failures import failed_for_good, record_retry, transient_reason

            job = ray.get_runtime_context().get_job_id()  # the trials' job: this driver's
            # The trial's folder in the storage (where results and retries are read), or its staging copy.
            dirs = [d for d in dict.fromkeys((trial.path, trial.local_path)) if d and Path(d).is_dir()]
            if not dirs or any(failed_for_good(d, job) is not None for d in dirs):
                return
            try:
                text = Path(trial.error_file).read_text()
            except (OSError, TypeError):
                text = ""
            last = text.rsplit("Failure #", 1)[-1]
            reason = transient_reason(RuntimeError(last)) or "the trial's driver failed"
            attempt = trial.run_metadata.num_failures
            record_retry(dirs[0], attempt, reason, _one_line(last))
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} retrying (attempt {attempt}: "
                  f"{reason})", file=out, flush=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            try:
                reason = _one_line(Path(trial.error_file).read_text())
            except (OSError, TypeError):
                reason = f"see {trial.local_path}"
            print(f"[{time.perf_counter() - self.t0:6.0f}s] {self._label(trial):<20} FAILED: {reason}",
                  file=out, flush=True)

    return Progress()


def _new_tuner(spec: SweepSpec, trainable: Any, trials: list, concurrent: int, storage: Path, out: TextIO) -> Any:
    """A Tuner for the sweep's searcher: the grid of variants, or the variants then sampled trials."""
    from ray import tune

    search = spec.search
    fixed = [{"trial": t.model_dump()} for t in trials]
    tune_config: dict[str, Any] = dict(metric=search.metric, mode=search.mode, scheduler=_scheduler(spec),
                                       max_concurrent_trials=concurrent,
                                       trial_dirname_creator=lambda t: f"trial_{t.trial_id}")
    if search.searcher == "grid":
        param_space: dict[str, Any] | None = {"trial": tune.grid_search([f["trial"] for f in fixed])}
    else:
        # Sampled trials distil from the few-shot teacher with the sampled policy (see run_trial).
        base = spec.trial_configs(trials[0].experiment_dir, trials[0].cache_paths)[0]
        base = base.model_copy(update={"variant": base.variant.model_copy(
            update={"condition": "distill", "teacher_mode": "fewshot", "protected": False, "label": "sampled"})})
        if search.searcher == "optuna":
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            from search_spaces.spaces import define_by_run
            from tuner.searchers import BaselinesFirst

            space = define_by_run(search.families, search.ranges, {"trial": base.model_dump()})
            inner = OptunaSearch(space=space, metric=search.metric, mode=search.mode,
                                 sampler=optuna.samplers.TPESampler(seed=search.seed))
            tune_config["search_alg"] = BaselinesFirst(inner, fixed)
            param_space = None
        else:  # random: Tune's own sampling of one family's space, seeded
            from search_spaces.spaces import tune_space
            from tuner.searchers import BaselinesFirst, SeededRandom

            param_space = None
            inner = SeededRandom({"trial": base.model_dump(), **tune_space(search.families[0], search.ranges)},
                                 seed=search.seed, metric=search.metric, mode=search.mode)
            tune_config["search_alg"] = BaselinesFirst(inner, fixed)
        tune_config["num_samples"] = len(fixed) + search.num_samples
        print(f"searcher {search.searcher}: {len(fixed)} fixed trials, then {search.num_samples} sampled from "
              f"{', '.join(search.families)} (seed {search.seed})", file=out)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(storage), verbose=0,
                                  callbacks=[_progress_callback(out)],
                                  # A trial's driver lost outside its TorchTrainer (its actor died or
                                  # never ran) is retried here; failures inside it are retried by the
                                  # trial itself, by cause, and a trial that failed for good answers
                                  # Tune's retry at once with the same reason (trainables/trainable.py).
                                  failure_config=tune.FailureConfig(max_failures=spec.resources.max_retries)),
    )


def run_sweep(spec: SweepSpec, storage: Path | None = None, resume: bool = False,
              out: TextIO = sys.stdout) -> SweepOutcome:
    """Run the whole sweep and return where its results and table are."""
    from trainables.config import TrialConfig
    from trainables.data import check_sources
    from trainables.models import load_tokenizer, prepare_model

    storage = Path(storage or default_storage()).expanduser().resolve()
    experiment_dir = storage / spec.name
    if not resume and list(experiment_dir.glob("experiment_state-*.json")):
        raise ExperimentExists(f"{experiment_dir} already holds a sweep: add --resume to continue it, "
                               "or give another --name")
    # Everything that can be checked is checked before Ray starts or the storage is written.
    prepare_model(spec.model, out)  # the tiny default or a random: model, built once
    load_tokenizer(spec.model)  # fail fast, in one line, when the model cannot be reached
    check_sources(TrialConfig(model=spec.model, data=spec.data, eval=spec.eval))  # ... or the data
    check_storage(storage)  # ... or the storage cannot take the results

    import ray
    from ray import tune

    from analysis.collect import write_results
    from analysis.errors import AnalysisError
    from analysis.render import render
    from analysis.study import sweep_delta_table
    from trainables.trainable import run_trial
    from tuner.launch_order import launch_order

    storage.mkdir(parents=True, exist_ok=True)
    dashboard = init_ray()
    if dashboard:
        print(f"Ray dashboard: {dashboard}", file=out)

    cache_root = Path(spec.teacher.cache_dir).expanduser() if spec.teacher.cache_dir else storage / CACHE_DIRNAME
    spec = resolve_gpu_sharing(spec, out)
    # The caches build while the first trials start (set-up, model loading): a trial that needs one
    # waits for it before its first step; a build asks for no more of a GPU than one trial.
    share = ray_gpu_fraction(spec.resources) if spec.resources.use_gpu else None
    builds = start_cache_builds(spec, cache_root, out, gpu_cap=share, experiment_dir=str(experiment_dir))
    trials = launch_order(spec.trial_configs(str(experiment_dir), builds.paths), builds.building)
    concurrent = max_concurrent(spec, ray.cluster_resources())
    print(f"sweep {spec.name}: {len(trials)} trials, up to {concurrent} at a time -> {experiment_dir}", file=out)

    trainable = tune.with_resources(run_trial, {"CPU": 1})
    if resume and tune.Tuner.can_restore(str(experiment_dir)):
        print(f"resuming {experiment_dir}: finished trials are kept", file=out)
        tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = _new_tuner(spec, trainable, trials, concurrent, storage, out)
    pgs_before = _job_placement_groups()
    grid = tuner.fit()
    _release_placement_groups(pgs_before)
    try:
        builds.wait()
    except CacheBuildFailed:  # printed as it happened; the trials that needed the cache failed with it
        pass
    errors = {_result_label(r): _one_line(r.error) for r in grid if r.error is not None}
    notes = _trial_notes(grid)
    _write_failures(grid, experiment_dir)

    results_path = write_results(experiment_dir)
    _write_skipped(spec, experiment_dir)
    import pandas as pd

    results = pd.read_parquet(results_path)
    note = ""
    try:
        delta = sweep_delta_table(experiment_dir)
        note, delta.note = delta.note, ""
        table = render(delta, "md")
    except AnalysisError as err:  # TableError included
        table = f"(no table: {err})"
    stopped = _stopped_early(results, failed=set(errors))
    if stopped:
        table += "\n\nStopped early by the scheduler (no test evaluation): " + "; ".join(stopped)
    if errors:
        table += "\n\nFailed (not in the table): " + "; ".join(f"{k} ({v})" for k, v in sorted(errors.items()))
    return SweepOutcome(experiment_dir, results_path, table, note, errors, notes)


def _job_placement_groups() -> set[str]:
    """Ids of the live placement groups created by this driver's job."""
    import ray
    from ray.util import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    return {pid for pid, pg in placement_group_table().items() if pid.endswith(job) and pg["state"] != "REMOVED"}


def _release_placement_groups(before: set[str]) -> None:
    """Remove placement groups this sweep's trials left reserved after Tune returned.

    Seen with Ray 2.60: after `Tuner.fit()` returns, one-CPU groups of finished trials can stay
    CREATED, holding their CPUs; a later sweep in the same Ray session (a notebook, a second job
    on a cluster) then waits forever for workers. Only this job's groups are touched."""
    from ray.util import remove_placement_group

    for pid in _job_placement_groups() - before:
        try:
            remove_placement_group(_pg_handle(pid))
        except Exception:  # already gone
            pass


def _pg_handle(pid: str) -> object:
    """The PlacementGroup handle for a hex id."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(PlacementGroupID(bytes.fromhex(pid)))


def _stopped_early(results: Any, failed: set[str] = frozenset()) -> list[str]:
    """'label (step N, dev avg X)' for each trial that never reached its final evaluation and did
    not fail (labels in `failed`)."""
    if results.empty:
        return []
    final = set(results.loc[results["final"], "trial_id"])
    dev = results[(results["split"] == "dev") & (results["task"] == ALL) & (results["lang"] == AVG)]
    out = []
    for trial_id, rows in dev.groupby("trial_id"):
        if trial_id not in final and rows["label"].iloc[0] not in failed:
            last = rows.sort_values("step").iloc[-1]
            out.append(f"{last['label']} (step {int(last['step'])}, dev avg {last['value']:.1f})")
    return sorted(out)


def _write_skipped(spec: SweepSpec, experiment_dir: Path) -> None:
    """Record the (task, language) pairs the data source lacks (skipped, never scored as 0)."""
    from trainables.config import TrialConfig
    from trainables.evaluate import skipped_pairs

    skipped = [{"task": t, "lang": lang, "reason": why}
               for t, lang, why in skipped_pairs(TrialConfig(model=spec.model, data=spec.data, eval=spec.eval))]
    (experiment_dir / "skipped_pairs.json").write_text(json.dumps(skipped, indent=1, ensure_ascii=False))


def _result_label(result: Any) -> str:
    """A Tune result's variant label (its trial id when the config has none)."""
    from search_spaces.spaces import resolved_trial

    label = resolved_trial(result.config or {}).get("variant", {}).get("label")
    return label or Path(result.path).name


def _write_failures(grid: Any, experiment_dir: Path) -> None:
    """Record each failed trial with its reason and retries (failed_trials.json, [] when none)."""
    from analysis.collect import FAILURES_FILE
    from trainables.failures import read_retries

    rows = [{"trial": Path(r.path).name if r.path else "", "label": _result_label(r), "reason": _one_line(r.error),
             "retries": read_retries(r.path) if r.path else []}
            for r in grid if r.error is not None]
    (experiment_dir / FAILURES_FILE).write_text(json.dumps(rows, indent=1, ensure_ascii=False))


def _trial_notes(grid: Any) -> list[str]:
    """One line per trial on its peak memory, and one per retry with its reason."""
    from trainables.failures import read_retries

    peaks, retries = [], []
    for r in grid:
        label, last, peak = _result_label(r), r.metrics or {}, mem_key("peak_gpu_gb")
        if peak in last:
            peaks.append(f"{label} {last[peak]:.1f} GB")
        for row in read_retries(r.path) if r.path else []:
            retries.append(f"retried {label} (attempt {row['attempt']}: {row['reason']} — {row['error']})")
    return (["peak GPU memory per trial: " + ", ".join(peaks)] if peaks else []) + retries


def _one_line(err: BaseException | str) -> str:
    """The reason a trial failed, in one line: the trial's own TrialFailed line when there is one."""
    text = str(err).strip().splitlines()
    mine = [ln.strip() for ln in text if "TrialFailed:" in ln]
    if mine:
        return mine[-1].split("TrialFailed:", 1)[1].strip()
    name = type(err).__name__ if isinstance(err, BaseException) else "error"
    return f"{name}: {text[-1] if text else ''}"

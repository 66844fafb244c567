"""The Tune driver function: one trial = one `TorchTrainer` run of `loop.train_loop_per_worker`.

Ray 2.60 (Train V2): Tune no longer takes a trainer directly. Each trial is this function; it
builds a TorchTrainer whose reports reach Tune through `TuneReportCallback` (rank 0's metrics
become one Tune result row, which ASHA acts on). GPUs are reserved by the inner ScalingConfig.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from trainables import faults
from trainables.config import TrialConfig
from trainables.failures import failed_for_good, one_line, record_failed_for_good, record_retry, transient_reason
from trainables.gpu_slots import ray_gpu_fraction
from trainables.trial_log import write_config


#: Seconds between the Train controller's polls of its workers (Ray's default: 2).
HEALTH_CHECK_INTERVAL_S = 0.25


def run_trial(config: dict[str, Any]) -> None:
    """Run one trial (a condition × λ policy) as a TorchTrainer inside the Tune session."""
    started = time.time()  # the worker reports how long it took Ray to start it (time/worker_start_s)
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainables.loop import train_loop_per_worker

    from search_spaces.spaces import resolved_trial

    # A point drawn by the sweep's searcher (config["sampled"]) becomes this trial's λ policy.
    cfg = TrialConfig.model_validate(resolved_trial(config))
    # Train V2 hands these to its controller. Worker start-up can exceed Ray's default 60 s on a
    # loaded machine (several trials importing torch on two cores), and a trial's workers may wait
    # for the GPU share a teacher-cache build holds (at most teacher.wait_s); a timeout there fails a trial.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(max(900, int(cfg.teacher.wait_s))))
    # The controller polls its workers every 2 s by default, so it notices a started or finished
    # worker up to 2 s late, at a trial's start and again at its end; a poll is one small actor call.
    # A trial with a trivial worker (2-core CPU machine, 2 trials): fit() 9.7–10.5 s at 2 s, 5.3–6.7 s at 0.25 s.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_INTERVAL_S))
    trial_name = ray.tune.get_context().get_trial_id() or "trial"
    trial_dir = ray.tune.get_context().get_trial_dir()
    job = ray.get_runtime_context().get_job_id()
    # Tune retries any failed trial (the sweep's FailureConfig: a driver lost before or around its
    # TorchTrainer, which the loop below never sees); one that failed for good stays failed.
    prior = failed_for_good(trial_dir, job) if trial_dir else None
    if prior is not None:
        raise TrialFailed(prior)
    faults.at_driver_start(cfg, trial_name)
    if cfg.experiment_dir:
        write_config(cfg.experiment_dir, trial_name, config)
    r = cfg.resources
    per_worker: dict[str, float] = {"CPU": r.cpus_per_worker}
    if r.use_gpu:
        per_worker["GPU"] = ray_gpu_fraction(r)  # with resources.start_ahead, less than the memory share
    run_dir = Path(cfg.experiment_dir) / "train_runs" / f"train-{trial_name}"
    attempt = 0
    while True:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"trial": cfg.model_dump(), "trial_name": trial_name, "attempt": attempt,
                               "driver_started": started if attempt == 0 else time.time()},
            scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=per_worker),
            run_config=RunConfig(
                # One deterministic name for every attempt: a retry, or a resumed sweep's trial,
                # finds this run's checkpoints again and its workers continue from the latest.
                name=run_dir.name,
                storage_path=str(run_dir.parent),
                callbacks=[TuneReportCallback()],
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_kept),
                failure_config=FailureConfig(max_failures=0),  # retries are decided here, by cause
            ),
        )
        try:
            trainer.fit()
            return
        except Exception as err:  # a worker's error, wrapped by Ray Train
            reason = transient_reason(err)
            if reason is None or attempt >= r.max_retries:
                why = "not retried: deterministic" if reason is None else f"gave up after {attempt} retries"
                message = f"{one_line(err)} ({why})"
                if trial_dir:
                    record_failed_for_good(trial_dir, message, job)
                raise TrialFailed(message) from err
            attempt += 1
            if trial_dir:
                record_retry(trial_dir, attempt, reason, one_line(err))
        finally:
            _prune_checkpoints(run_dir)


def _prune_checkpoints(run_dir: Path) -> None:
    """Delete the run's checkpoint folders that Ray Train's manager no longer lists.

    Ray keeps `num_to_keep` of the checkpoints it registered, but a checkpoint restored from an
    earlier attempt stays on disk beside the new ones: without this a retry would keep one more."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        state = json.loads(snapshot.read_text())
    except (OSError, ValueError):
        return
    listed = {r.get("checkpoint_dir_name") for r in state.get("checkpoint_results", [])}
    latest = state.get("latest_checkpoint_result") or {}
    listed.add(latest.get("checkpoint_dir_name"))
    if not listed - {None}:
        return
    for d in run_dir.glob("checkpoint_*"):
        if d.is_dir() and d.name not in listed:
            shutil.rmtree(d, ignore_errors=True)


class TrialFailed(RuntimeError):
    """A trial's training failed for good: its one-line reason and whether it was retried."""

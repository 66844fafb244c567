"""Failures: transient ones (out of memory, a lost worker) are retried up to resources.max_retries
with their reason recorded; deterministic ones (a non-finite loss, a bad config) fail at once."""

from __future__ import annotations

import json

import pytest

from trainables.config import TrialConfig
from trainables.failures import one_line, read_retries, transient_reason


class WorkerGroupError(RuntimeError):
    """Stands in for Ray Train's wrapper of a worker's exception."""


def wrapped(inner: BaseException) -> BaseException:
    try:
        raise WorkerGroupError("Training failed due to worker errors") from inner
    except WorkerGroupError as err:
        return err


@pytest.mark.parametrize("inner, reason", [
    (RuntimeError("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU out of memory"),
    (RuntimeError("ray.exceptions.ActorDiedError: The actor died unexpectedly"), "a worker process died"),
    (RuntimeError("Task was killed due to the node running low on memory (OOM)"), "killed by the out-of-memory killer"),
    (RuntimeError("ActorDiedError: The actor is dead because its worker process has died. Worker exit type: "
                  "SYSTEM_ERROR ... (1) the process was killed by the OOM killer due to high memory usage"),
     "a worker process died (killed or crashed)"),
])
def test_transient_failures_are_recognised_through_wrappers(inner, reason):
    assert transient_reason(wrapped(inner)) == reason


@pytest.mark.parametrize("inner", [
    FloatingPointError("non-finite loss at step 7"),
    ValueError("data.tasks: unknown task 'xx'"),
    RuntimeError("out of memory? no: CacheError: teacher cache answer tokens differ"),
])
def test_deterministic_failures_are_not_retried(inner):
    assert transient_reason(wrapped(inner)) is None


def test_one_line_names_the_cause():
    err = wrapped(FloatingPointError("non-finite loss at step 7"))
    assert one_line(err) == "FloatingPointError: non-finite loss at step 7"


def test_one_line_names_an_oom_whose_head_ray_cut_off():
    """Ray Train shortens a worker's error to its tail: the line left must still say what happened
    (the text is what one H100 run printed, 2026-12-07)."""
    tail = (", this process has 41.72 GiB memory in use. Of the allocated memory 40.36 GiB is allocated by "
            "PyTorch, with 16.39 GiB allocated in private pools (e.g., CUDA Graphs)")
    err = wrapped(RuntimeError("Training failed due to worker errors:\n... (Output truncated) ...\n" + tail))
    line = one_line(err)
    assert line.startswith("GPU out of memory: this process has 41.72 GiB memory in use") and "\n" not in line
    whole = wrapped(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert one_line(whole) == "GPU out of memory: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


class FakeTrainer:
    """A TorchTrainer stand-in whose fit() raises the scripted errors in turn, then succeeds."""

    script: list[BaseException | None] = []
    names: list[str] = []
    configs: list[dict] = []

    def __init__(self, fn, train_loop_config, scaling_config, run_config):
        FakeTrainer.names.append(run_config.name)
        FakeTrainer.configs.append(train_loop_config)

    def fit(self):
        err = FakeTrainer.script.pop(0)
        if err is not None:
            raise wrapped(err)


@pytest.fixture
def fake_ray(monkeypatch, tmp_path):
    import ray.train
    import ray.train.torch
    import ray.tune

    class Ctx:
        def get_trial_id(self):
            return "t1"

        def get_trial_dir(self):
            return str(tmp_path)

    import ray.tune.integration.ray_train

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", FakeTrainer)
    monkeypatch.setattr(ray.tune.integration.ray_train, "TuneReportCallback", lambda: None)
    monkeypatch.setattr(ray.train, "RunConfig", lambda **kw: type("RunConfig", (), kw)())
    monkeypatch.setattr(ray.tune, "get_context", lambda: Ctx())
    import ray

    monkeypatch.setattr(ray, "get_runtime_context", lambda: type("Rt", (), {"get_job_id": lambda self: JOB[0]})())
    JOB[0] = "01000000"
    FakeTrainer.names, FakeTrainer.configs = [], []
    return tmp_path


#: The Ray job the fake runtime reports (a resumed sweep is another job).
JOB = ["01000000"]


def trial(max_retries: int) -> dict:
    cfg = TrialConfig.model_validate({"resources": {"max_retries": max_retries}})
    return {"trial": cfg.model_dump()}


def test_transient_failure_is_retried_and_recorded(fake_ray):
    from trainables.trainable import run_trial

    FakeTrainer.script = [RuntimeError("CUDA out of memory"), None]
    run_trial(trial(2))
    # The same run name: the retry's workers find the first attempt's checkpoints.
    assert FakeTrainer.names == ["train-t1", "train-t1"]
    rows = read_retries(fake_ray)
    assert [(r["attempt"], r["reason"]) for r in rows] == [(1, "GPU out of memory")]
    assert json.loads((fake_ray / "retries.json").read_text())[0]["error"].endswith("CUDA out of memory")


def test_retries_are_bounded(fake_ray):
    from trainables.trainable import TrialFailed, run_trial

    FakeTrainer.script = [RuntimeError("CUDA out of memory")] * 3
    with pytest.raises(TrialFailed, match="gave up after 1 retries"):
        run_trial(trial(1))
    assert len(FakeTrainer.names) == 2


def test_deterministic_failure_fails_once(fake_ray):
    from trainables.trainable import TrialFailed, run_trial

    FakeTrainer.script = [FloatingPointError("non-finite loss at step 3"), None]
    with pytest.raises(TrialFailed, match="non-finite loss at step 3 .not retried: deterministic"):
        run_trial(trial(5))
    assert FakeTrainer.names == ["train-t1"] and read_retries(fake_ray) == []


def test_a_trial_that_failed_for_good_answers_tunes_retry_at_once_and_runs_again_when_resumed(fake_ray):
    from trainables.trainable import TrialFailed, run_trial

    FakeTrainer.script = [FloatingPointError("non-finite loss at step 3")]
    with pytest.raises(TrialFailed) as first:
        run_trial(trial(5))
    # Tune retries the trial (the sweep's FailureConfig): the same reason, no trainer built.
    with pytest.raises(TrialFailed) as again:
        run_trial(trial(5))
    assert str(again.value) == str(first.value) and FakeTrainer.names == ["train-t1"]
    # Transient failures past their retries are final too.
    FakeTrainer.script = [RuntimeError("CUDA out of memory")] * 2
    (fake_ray / "failed_for_good.json").unlink()
    with pytest.raises(TrialFailed, match="gave up after 1 retries"):
        run_trial(trial(1))
    with pytest.raises(TrialFailed, match="gave up after 1 retries"):
        run_trial(trial(1))
    assert len(FakeTrainer.names) == 3
    # A resumed sweep is another Ray job: the trial runs again.
    JOB[0] = "02000000"
    FakeTrainer.script = [None]
    run_trial(trial(1))
    assert len(FakeTrainer.names) == 4


def test_failed_for_good_is_read_for_its_job_only(tmp_path):
    from trainables.failures import failed_for_good, record_failed_for_good

    assert failed_for_good(tmp_path, "01") is None
    record_failed_for_good(tmp_path, "non-finite loss at step 3 (not retried: deterministic)", "01")
    assert failed_for_good(tmp_path, "01") == "non-finite loss at step 3 (not retried: deterministic)"
    assert failed_for_good(tmp_path, "02") is None
    (tmp_path / "failed_for_good.json").write_text("{not json")
    assert failed_for_good(tmp_path, "01") is None


def test_fault_specs_parse_and_bad_ones_name_the_grammar():
    from trainables.faults import parse

    assert parse("kill@3") == [(3, None)]
    assert parse("kill@3:distill λ=0.5,kill@driver:control λ=0.05") == [(3, "distill λ=0.5"),
                                                                       ("driver", "control λ=0.05")]
    for bad in ("kill@0", "kill@later", "stop@3", "kill@3,", "kill"):
        with pytest.raises(ValueError, match="LAMTUNE_INJECT_FAULT=.*kill@driver"):
            parse(bad)


def test_the_driver_polls_its_workers_often_and_tells_them_when_it_started(fake_ray, monkeypatch):
    import time

    from trainables.trainable import HEALTH_CHECK_INTERVAL_S, run_trial

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    FakeTrainer.script = [RuntimeError("CUDA out of memory"), None]
    before = time.time()
    run_trial(trial(1))
    import os

    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == str(HEALTH_CHECK_INTERVAL_S) and HEALTH_CHECK_INTERVAL_S < 2
    first, retry = (c["driver_started"] for c in FakeTrainer.configs)
    assert before <= first <= retry <= time.time()  # a retry counts its start from its own attempt
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")  # a user's setting stands
    FakeTrainer.script = [None]
    run_trial(trial(0))
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"

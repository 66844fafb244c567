"""Trials started ahead of a free GPU share: Ray's fraction, the slot locks, and set-up waiting with its weights on the host."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from trainables import loop
from trainables.config import ResourcesConfig, TrialConfig
from trainables.gpu_slots import GpuSlot, ahead, ray_gpu_fraction, shares_per_gpu, slot_dir
from tuner.gpu_sharing import resolve_gpu_sharing
from tuner.loading import load_spec
from tuner.sweep import max_concurrent, trial_resources

REPO = Path(__file__).resolve().parents[2]


def _res(**kw) -> ResourcesConfig:
    return ResourcesConfig.model_validate({"use_gpu": True, **kw})


def test_ray_is_asked_for_one_more_trial_per_gpu_than_its_shares():
    half = _res(gpus_per_worker=0.5, start_ahead=1)
    assert shares_per_gpu(half) == 2 and ahead(half) == 1 and ray_gpu_fraction(half) == pytest.approx(1 / 3)
    assert ray_gpu_fraction(_res(gpus_per_worker=0.25, start_ahead=2)) == pytest.approx(1 / 6)
    assert ray_gpu_fraction(_res(gpus_per_worker=1.0, start_ahead=1)) == 0.5  # one runs, one starts
    # No starting ahead: off the GPU, with data-parallel trials, several GPUs a worker, unresolved 'auto', or 0.
    for r in (_res(gpus_per_worker=0.5, start_ahead=0), _res(gpus_per_worker=1.0, num_workers=2, start_ahead=1),
              _res(gpus_per_worker=2.0, start_ahead=1), _res(gpus_per_worker=0.5),
              ResourcesConfig(gpus_per_worker=0.5, start_ahead=1)):
        assert ahead(r) == 0
    assert ray_gpu_fraction(_res(gpus_per_worker=0.5, start_ahead=0)) == 0.5


def test_start_ahead_out_of_range_is_one_line_naming_the_field():
    with pytest.raises(ValueError, match=r"start_ahead must be 'auto' or in \[0, 4\], got 5"):
        _res(start_ahead=5)


def test_the_sweep_resolves_auto_and_asks_ray_for_the_smaller_fraction(tiny_dir):
    spec = load_spec("smoke")
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"use_gpu": True})})
    out = io.StringIO()
    resolved = resolve_gpu_sharing(spec, out, gpu_bytes=10**15)
    r = resolved.resources
    assert r.start_ahead == 2 and r.gpus_per_worker == 0.25 and "2 more per GPU start(s) ahead" in out.getvalue()
    assert trial_resources(resolved)["GPU"] == pytest.approx(1 / 6)
    assert max_concurrent(resolved, {"CPU": 64.0, "GPU": 1.0}) == 6  # 4 using the GPU, 2 starting
    given = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus_per_worker": 0.5})})
    assert resolve_gpu_sharing(given, io.StringIO()).resources.start_ahead == 0  # a fraction the user chose stands alone
    one = spec.model_copy(update={"resources": spec.resources.model_copy(update={"start_ahead": 1})})
    assert resolve_gpu_sharing(one, io.StringIO(), gpu_bytes=10**15).resources.start_ahead == 1
    # Waiting weights must fit in host memory: 8 GPUs × the tiny model's weights against a tiny host.
    from trainables.memory_plan import parameter_count
    from tuner.gpu_sharing import model_config, waiting_fits

    weights = parameter_count(model_config(spec)) * 2
    assert waiting_fits(weights, 1, 8, 16 * weights) and not waiting_fits(weights, 1, 8, 15 * weights)
    assert waiting_fits(weights, 2, 8, 32 * weights) and not waiting_fits(weights, 2, 8, 31 * weights)
    for host_weights, want in ((32, 2), (31, 1), (16, 1), (15, 0)):
        out = io.StringIO()
        got = resolve_gpu_sharing(spec, out, gpu_bytes=10**15, host=(host_weights * weights, 8)).resources.start_ahead
        assert got == want, (host_weights, got)
        assert (f"start_ahead: {want} — 2 per GPU × 8 GPU(s)" in out.getvalue()) == (want < 2)
    explicit = spec.model_copy(update={"resources": spec.resources.model_copy(update={"start_ahead": 1})})
    assert resolve_gpu_sharing(explicit, io.StringIO(), gpu_bytes=10**15, host=(weights, 8)).resources.start_ahead == 1
    cpu = resolve_gpu_sharing(load_spec("smoke"), io.StringIO())
    assert cpu.resources.start_ahead == 0 and trial_resources(cpu) == {"CPU": 2.0}


def test_n_slots_admit_n_holders_and_a_released_slot_admits_the_next(tmp_path):
    holders = [GpuSlot(tmp_path, 2) for _ in range(3)]
    assert holders[0].try_acquire() and holders[1].try_acquire()
    assert {holders[0].index, holders[1].index} == {0, 1}
    assert not holders[2].try_acquire()
    holders[0].release()
    assert holders[2].try_acquire() and holders[2].index == 0


def test_acquire_waits_for_a_release_and_gives_up_past_its_timeout(tmp_path):
    first, second = GpuSlot(tmp_path, 1), GpuSlot(tmp_path, 1)
    assert first.try_acquire()
    with pytest.raises(TimeoutError, match="no GPU slot of 1 freed"):
        second.acquire(timeout_s=0.3)
    threading.Timer(0.6, first.release).start()
    waited = second.acquire(timeout_s=10)
    assert 0.5 <= waited < 5 and second.index == 0


def test_a_killed_holder_frees_its_slot(tmp_path):
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
            f"from trainables.gpu_slots import GpuSlot; s = GpuSlot(Path({str(tmp_path)!r}), 1); "
            "assert s.try_acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        slot = GpuSlot(tmp_path, 1)
        assert not slot.try_acquire()
        proc.kill()
        proc.wait()
        assert slot.acquire(timeout_s=10) < 10
    finally:
        proc.kill()


def test_slot_folders_differ_by_experiment_and_gpu(tmp_path):
    a = slot_dir(str(tmp_path / "a"), "GPU-1")
    assert a == slot_dir(str(tmp_path / "a"), "GPU-1")
    assert a != slot_dir(str(tmp_path / "b"), "GPU-1") and a != slot_dir(str(tmp_path / "a"), "GPU-2")


def _trial(tmp_path: Path, condition: str) -> TrialConfig:
    return TrialConfig.model_validate({
        "experiment_dir": str(tmp_path / "exp"),
        "data": {"source": "synthetic", "max_train_per_task": 8, "tasks": ["nli", "pos"], "eval_langs": ["en"]},
        "eval": {"dev_per_pair": 2, "test_per_pair": 2}, "train": {"steps": 2, "batch_size": 2},
        "variant": {"condition": condition}})


@pytest.mark.parametrize("condition", ["sft", "base"])
def test_a_trial_started_ahead_waits_with_its_weights_on_the_host(tmp_path, tiny_dir, monkeypatch, condition):
    """A whole trial on the CPU with the slot logic forced on: the weights load with on_host=True
    while the only slot is held, set-up waits for it, moves the model, reports the wait apart
    from set-up, and gives the slot back when the trial ends."""
    slots = tmp_path / "slots"
    holder = GpuSlot(slots, 1)
    assert holder.try_acquire()
    monkeypatch.setattr(loop, "trial_slot", lambda cfg, device: GpuSlot(slots, 1))
    hosts, states = [], []
    real_load, real_setup = loop.load_model, loop.setup

    def load(*args, on_host=False, **kw):
        hosts.append(on_host)
        model = real_load(*args, on_host=on_host, **kw)
        threading.Timer(2.0, holder.release).start()  # the running trial ends a moment later
        return model

    monkeypatch.setattr(loop, "load_model", load)
    monkeypatch.setattr(loop, "setup", lambda *a, **k: states.append(real_setup(*a, **k)) or states[-1])
    reports = []
    t0 = time.perf_counter()
    loop.run_worker(_trial(tmp_path, condition), "t", 0, 1, torch.device("cpu"), reports.append)
    wall = time.perf_counter() - t0
    state = states[0]
    assert hosts == [True] and state.trains == (condition == "sft")
    assert 0.5 <= state.slot_wait_s < 10 and "to_device" in state.setup_parts
    first = reports[0]
    assert first["time/slot_wait_s"] == state.slot_wait_s
    assert 0 < first["time/setup_s"] < wall - state.slot_wait_s
    assert state.slot is not None and state.slot.held is None  # given back at the end
    assert GpuSlot(slots, 1).try_acquire()


def test_a_free_slot_means_loading_straight_onto_the_device(tmp_path, tiny_dir, monkeypatch):
    slots = tmp_path / "slots"
    monkeypatch.setattr(loop, "trial_slot", lambda cfg, device: GpuSlot(slots, 1))
    hosts = []
    real_load = loop.load_model
    monkeypatch.setattr(loop, "load_model", lambda *a, on_host=False, **k: hosts.append(on_host) or real_load(*a, **k))
    state = loop.setup(_trial(tmp_path, "base"), "t", 0, 1, torch.device("cpu"))
    assert hosts == [False] and state.slot_wait_s == 0.0 and "to_device" not in state.setup_parts
    assert not GpuSlot(slots, 1).try_acquire()  # held until the trial ends
    state.slot.release()


def test_a_cache_build_beside_trials_started_ahead_holds_a_slot_while_it_builds(tmp_path, monkeypatch):
    from trainables.teacher import build

    slots = tmp_path / "slots"
    seen = []
    monkeypatch.setattr(build, "trial_slot", lambda cfg, dev: GpuSlot(slots, 1))
    monkeypatch.setattr(build, "build_cache", lambda cfg, root, mode, device, teachers, data: seen.append(
        GpuSlot(slots, 1).try_acquire()) or Path(root) / mode)
    assert build.build_caches(TrialConfig(), tmp_path, ["fewshot", "zeroshot"]) == [tmp_path / "fewshot", tmp_path / "zeroshot"]
    assert seen == [False, False]  # a trial could not take the slot while the build ran
    assert GpuSlot(slots, 1).try_acquire()  # and can once it is done


def test_a_trial_waiting_for_its_teacher_cache_leaves_the_free_slot_to_the_build(tmp_path, tiny_dir, monkeypatch):
    """The slot is free, but the cache is not built yet: the trial loads on the host, waits for the
    cache without holding the slot (the build may need it; a trial holding it would deadlock the
    sweep), then takes the slot."""
    from trainables.teacher.build import build_cache

    cfg = _trial(tmp_path, "distill")
    cfg.variant.policy.params = {"lam": 0.5}
    built = build_cache(cfg, tmp_path / "built", "fewshot")
    target = tmp_path / "caches" / built.name
    cfg.cache_paths = {"fewshot": str(target)}
    slots = tmp_path / "slots"
    monkeypatch.setattr(loop, "trial_slot", lambda c, device: GpuSlot(slots, 1))
    hosts, free_while_waiting = [], []
    real_load = loop.load_model
    monkeypatch.setattr(loop, "load_model", lambda *a, on_host=False, **k: hosts.append(on_host) or real_load(*a, on_host=on_host, **k))

    def finish_build() -> None:
        time.sleep(1.5)
        probe = GpuSlot(slots, 1)
        free_while_waiting.append(probe.try_acquire())
        probe.release()
        target.parent.mkdir()
        built.rename(target)

    threading.Thread(target=finish_build).start()
    state = loop.setup(cfg, "t", 0, 1, torch.device("cpu"))
    assert hosts == [True] and free_while_waiting == [True]
    assert state.cache_wait_s > 0.3 and state.slot_wait_s < 1.0 and state.trains
    assert state.slot is not None and state.slot.held is not None  # taken once the cache was there
    state.slot.release()

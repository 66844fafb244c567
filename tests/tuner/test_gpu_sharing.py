"""`resources.gpus_per_worker: auto`: the memory plan decides how many trials share a GPU."""

from __future__ import annotations

import io

import pytest

import torch

from tuner.loading import load_spec
from trainables.config import ModelConfig, TrialConfig
from trainables.memory_plan import MAX_TRIALS_PER_GPU, parameter_count, trial_bytes, trials_per_gpu
from trainables.models import load_model
from tuner.gpu_sharing import model_config, resolve_gpu_sharing


def gpu_spec(**resources):
    spec = load_spec("smoke")
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"use_gpu": True, **resources})})


def test_parameter_count_matches_the_model(tiny_dir):
    model = load_model(ModelConfig(name="tiny"), torch.device("cpu"), trainable=False)
    assert parameter_count(model.config) == sum(p.numel() for p in model.parameters())


def test_auto_packs_as_many_trials_as_fit(tiny_dir):
    spec = gpu_spec()
    need = trial_bytes(TrialConfig(model=spec.model, data=spec.data, train=spec.train, eval=spec.eval),
                       model_config(spec))
    out = io.StringIO()
    roomy = resolve_gpu_sharing(spec, out, gpu_bytes=100 * need)
    assert roomy.resources.gpus_per_worker == 1 / MAX_TRIALS_PER_GPU
    assert "trial(s) per GPU" in out.getvalue()
    assert resolve_gpu_sharing(spec, out, gpu_bytes=int(2.5 * need / 0.9)).resources.gpus_per_worker == 0.5
    assert resolve_gpu_sharing(spec, out, gpu_bytes=need // 2).resources.gpus_per_worker == 1.0  # never 0 trials


def test_auto_is_one_gpu_off_the_gpu_or_for_data_parallel_trials():
    assert resolve_gpu_sharing(load_spec("smoke"), io.StringIO()).resources.gpus_per_worker == 1.0
    assert resolve_gpu_sharing(gpu_spec(num_workers=2), io.StringIO()).resources.gpus_per_worker == 1.0
    assert resolve_gpu_sharing(gpu_spec(gpus_per_worker=0.3), io.StringIO()).resources.gpus_per_worker == 0.3


def test_trials_per_gpu_bounds():
    assert trials_per_gpu(10, 1) == 1 and trials_per_gpu(1, 10**6) == MAX_TRIALS_PER_GPU
    assert trials_per_gpu(30 * 2**30, 139 * 2**30) == 4 and trials_per_gpu(50 * 2**30, 139 * 2**30) == 2


def test_cache_builds_share_the_gpus_there_are():
    """Cache builds run side by side: a whole GPU each when there are enough, else equal shares."""
    from tuner.sweep import cache_gpu_share

    assert cache_gpu_share(2, 1.0) == 0.5 and cache_gpu_share(3, 1.0) == pytest.approx(1 / 3)
    assert cache_gpu_share(2, 2.0) == 1.0 and cache_gpu_share(1, 8.0) == 1.0
    assert cache_gpu_share(3, 2.0) == 0.5  # two builds on one of the GPUs
    assert cache_gpu_share(0, 1.0) == 0.0


def test_cache_builds_of_one_teacher_share_a_process_unless_each_has_a_gpu():
    from tuner.sweep import cache_build_groups

    assert cache_build_groups(["fewshot", "zeroshot"], 1.0) == [["fewshot", "zeroshot"]]
    assert cache_build_groups(["fewshot", "zeroshot"], 0.0) == [["fewshot", "zeroshot"]]  # CPU
    assert cache_build_groups(["fewshot", "zeroshot"], 2.0) == [["fewshot"], ["zeroshot"]]
    # A checkpoint teacher has other weights: its own task beside the base model's.
    assert cache_build_groups(["checkpoint", "fewshot", "zeroshot"], 1.0) == [["fewshot", "zeroshot"], ["checkpoint"]]
    assert cache_build_groups(["checkpoint", "fewshot", "zeroshot"], 4.0) == [["checkpoint"], ["fewshot"], ["zeroshot"]]
    assert cache_build_groups(["zeroshot"], 1.0) == [["zeroshot"]] and cache_build_groups([], 1.0) == []


def test_training_graphs_get_what_the_share_leaves_beside_a_worst_case_step(monkeypatch):
    """graph_budget_bytes on a pretend 80 GiB GPU shared by two trials, against the plan's own terms
    worked out by hand for the 3B shape (8 rows × 512 tokens, 3072 × 28, 56 B; 8 × 64 answer
    tokens × 128,256 × 4 B × 4 copies)."""
    from types import SimpleNamespace

    from transformers import LlamaConfig

    from trainables.memory_plan import GB, graph_budget_bytes, step_bytes
    from trainables.random_shapes import ARCHITECTURES

    config = LlamaConfig(**ARCHITECTURES["llama-3.2-3b"])
    cfg = TrialConfig.model_validate({"train": {"batch_size": 8}, "data": {"max_student_len": 512},
                                      "resources": {"use_gpu": True, "gpus_per_worker": 0.5}})
    want_step = 8 * 512 * 3072 * 28 * 56 + 8 * 64 * 128_256 * 4 * 4
    assert step_bytes(cfg, config) == want_step
    held = {"bytes": 7 * GB}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: held["bytes"])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: held["bytes"] + GB)
    cuda = torch.device("cuda", 0)
    assert graph_budget_bytes(cfg, config, cuda) == int(80 * GB * 0.5 * 0.9) - 8 * GB - want_step
    held["bytes"] = 30 * GB  # nothing left beside the step: no graphs, never a negative budget
    assert graph_budget_bytes(cfg, config, cuda) == 0


def test_mps_running_finds_the_daemon_or_its_pipe(tmp_path):
    """MPS counts as on where its control daemon's process or its control pipe is there, not otherwise."""
    import os

    from tuner.gpu_sharing import MPS_DAEMON, mps_running

    proc, pipes = tmp_path / "proc", tmp_path / "pipes"
    (proc / "12").mkdir(parents=True)
    (proc / "12" / "cmdline").write_bytes(b"python\0-m\0nvidia-cuda-mps-control\0")  # named as an argument only
    (proc / "self").mkdir()
    pipes.mkdir()
    assert not mps_running(proc, str(pipes))
    (proc / "40").mkdir()
    (proc / "40" / "cmdline").write_bytes(f"/usr/bin/{MPS_DAEMON}\0-d\0".encode())
    assert mps_running(proc, str(pipes))
    os.mkfifo(pipes / "control")
    assert mps_running(tmp_path / "no-proc", str(pipes))


def test_sharing_line_says_whether_mps_is_on(tiny_dir):
    spec = gpu_spec()
    need = trial_bytes(TrialConfig(model=spec.model, data=spec.data, train=spec.train, eval=spec.eval),
                       model_config(spec))
    on, off, alone = io.StringIO(), io.StringIO(), io.StringIO()
    resolve_gpu_sharing(spec, on, gpu_bytes=int(2.5 * need / 0.9), mps=True)
    resolve_gpu_sharing(spec, off, gpu_bytes=int(2.5 * need / 0.9), mps=False)
    resolve_gpu_sharing(spec, alone, gpu_bytes=need, mps=False)
    assert "2 trial(s) per GPU" in on.getvalue() and "MPS is on" in on.getvalue()
    assert "MPS is off" in off.getvalue() and "take turns" in off.getvalue()
    assert "1 trial(s) per GPU" in alone.getvalue() and "MPS" not in alone.getvalue()  # nothing shares the GPU

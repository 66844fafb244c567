"""`resources.gpus_per_worker: auto`: how many trials share one GPU, decided before trials start
from the GPU's memory (asked of a GPU worker) and each trial's planned memory
(`trainables.memory_plan`), so that no user guesses a fraction and no trial dies of OOM because
too many were packed onto one device."""

from __future__ import annotations

from typing import Any, TextIO

from tuner.spec import SweepSpec


def gpu_total_bytes() -> int:
    """Memory of the GPU a one-GPU Ray task lands on (the task's process exits afterwards)."""
    import ray

    def probe() -> int:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)

    return int(ray.get(ray.remote(num_gpus=1, num_cpus=0, max_calls=1)(probe).remote()))


def model_config(spec: SweepSpec) -> Any:
    """The model's configuration (shapes only: no weights are read)."""
    from transformers import AutoConfig

    from trainables.models import model_path

    return AutoConfig.from_pretrained(model_path(spec.model), revision=spec.model.revision)


def resolve_gpu_sharing(spec: SweepSpec, out: TextIO, gpu_bytes: int | None = None) -> SweepSpec:
    """The spec with gpus_per_worker and start_ahead decided. gpus_per_worker: as given, 1.0 off the
    GPU or for multi-worker trials, else 1/n with n = the trials whose planned memory fits on one
    GPU. start_ahead 'auto': 1 where gpus_per_worker was 'auto' on a GPU with one worker per trial
    (a trial waiting for a slot holds no GPU memory beyond its CUDA context), else 0."""
    r = spec.resources
    ahead = r.start_ahead
    if ahead == "auto":
        ahead = 1 if r.use_gpu and r.num_workers == 1 and r.gpus_per_worker == "auto" else 0
    if r.gpus_per_worker != "auto":
        return spec.model_copy(update={"resources": r.model_copy(update={"start_ahead": ahead})})
    share = 1.0
    if r.use_gpu and r.num_workers == 1:
        from trainables.config import TrialConfig
        from trainables.memory_plan import GB, trial_bytes, trials_per_gpu

        trains = any(v.trains for v in spec.expanded_variants())
        cfg = TrialConfig(model=spec.model, data=spec.data, train=spec.train, eval=spec.eval, resources=r)
        need = trial_bytes(cfg, model_config(spec), trains=trains)
        total = gpu_bytes if gpu_bytes is not None else gpu_total_bytes()
        n = trials_per_gpu(need, total)
        share = 1.0 / n
        print(f"GPU sharing (resources.gpus_per_worker=auto): {n} trial(s) per GPU — planned {need / GB:.1f} GB "
              f"per trial of {total / GB:.0f} GB (trials report their peak as mem/peak_gpu_gb)"
              + (f"; {ahead} more per GPU start(s) ahead, weights in host memory until a slot frees "
                 "(resources.start_ahead)" if ahead else ""), file=out)
    return spec.model_copy(update={"resources": r.model_copy(update={"gpus_per_worker": share, "start_ahead": ahead})})

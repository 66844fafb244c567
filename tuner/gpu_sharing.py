"""`resources.gpus_per_worker: auto`: how many trials share one GPU, decided before trials start
from the GPU's memory (asked of a GPU worker) and each trial's planned memory
(`trainables.memory_plan`), so that no user guesses a fraction and no trial dies of OOM because
too many were packed onto one device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from tuner.spec import SweepSpec


#: Most of a node's host memory the weights of the trials waiting for a GPU slot may take, together.
HOST_SHARE_FOR_WAITING = 0.5
#: Trials per GPU started ahead of a free slot under start_ahead: auto. On one H100 (study runs 12 and
#: 13, the same machine one after the other): 1 → sweep 424 s, GPU busy 69.1%; 2 → 398 s, 73.4%.
AUTO_START_AHEAD = 2


#: NVIDIA's Multi-Process Service control daemon. While it runs, the CUDA processes on a GPU share
#: one MPS server, so trials sharing the GPU may run their kernels side by side instead of taking
#: turns (time slices). On one H100 the study bench gained nothing from it (README, 'Sharing a GPU
#: with NVIDIA MPS').
MPS_DAEMON = "nvidia-cuda-mps-control"


def mps_running(proc: Path = Path("/proc"), pipe_dir: str | None = None) -> bool:
    """Whether NVIDIA MPS serves this node's GPUs: its control daemon runs here, or its control pipe
    exists (`CUDA_MPS_PIPE_DIRECTORY`, else /tmp/nvidia-mps; a daemon outside this container)."""
    pipe = Path(pipe_dir or os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps") / "control"
    if pipe.exists():
        return True
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            argv0 = cmdline.read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if Path(argv0).name == MPS_DAEMON:
            return True
    return False


class GpuNode(NamedTuple):
    """What a GPU node has: one GPU's memory, host memory, GPUs, and whether MPS serves them."""

    gpu_bytes: int
    host_bytes: int
    gpus: int
    mps: bool


def probe_gpu_node() -> GpuNode:
    """The node a one-GPU Ray task lands on, as that task sees it (its process exits afterwards)."""
    import ray

    def probe() -> tuple[int, int, bool]:
        import torch

        return (int(torch.cuda.get_device_properties(0).total_memory),
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), mps_running())

    gpu, host, mps = ray.get(ray.remote(num_gpus=1, num_cpus=0, max_calls=1)(probe).remote())
    gpus = max((n.get("Resources", {}).get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    return GpuNode(int(gpu), int(host), max(1, int(gpus)), bool(mps))


def mps_note(trials_per_gpu: int, mps: bool | None) -> str:
    """What the sweep says of MPS where trials share a GPU ('' where none do, or nobody looked)."""
    if trials_per_gpu < 2 or mps is None:
        return ""
    if mps:
        return "; NVIDIA MPS is on: their kernels may run side by side"
    return "; NVIDIA MPS is off: they take turns on the GPU (README, 'Sharing a GPU with NVIDIA MPS')"


def waiting_fits(weights_bytes: int, ahead: int, gpus_per_node: int, host_bytes: int) -> bool:
    """Whether `ahead` trials per GPU waiting with their weights in host memory fit beside the rest
    of a node's work (together at most HOST_SHARE_FOR_WAITING of its memory)."""
    return ahead * gpus_per_node * weights_bytes <= HOST_SHARE_FOR_WAITING * host_bytes


def model_config(spec: SweepSpec) -> Any:
    """The model's configuration (shapes only: no weights are read)."""
    from transformers import AutoConfig

    from trainables.models import model_path

    return AutoConfig.from_pretrained(model_path(spec.model), revision=spec.model.revision)


def resolve_gpu_sharing(spec: SweepSpec, out: TextIO, gpu_bytes: int | None = None,
                        host: tuple[int, int] | None = None, mps: bool | None = None) -> SweepSpec:
    """The spec with gpus_per_worker and start_ahead decided. gpus_per_worker: as given, 1.0 off the
    GPU or for multi-worker trials, else 1/n with n = the trials whose planned memory fits on one
    GPU. start_ahead 'auto': AUTO_START_AHEAD where gpus_per_worker was 'auto' on a GPU with one
    worker per trial, fewer where the waiting trials' weights would not fit in host memory
    (`waiting_fits`; a trial waiting for a slot holds no GPU memory beyond its CUDA context), else
    0. `gpu_bytes`, `host` (host memory, GPUs per node) and `mps` stand in for asking the cluster."""
    r = spec.resources
    ahead = r.start_ahead
    if ahead == "auto":
        ahead = AUTO_START_AHEAD if r.use_gpu and r.num_workers == 1 and r.gpus_per_worker == "auto" else 0
    if r.gpus_per_worker != "auto":
        return spec.model_copy(update={"resources": r.model_copy(update={"start_ahead": ahead})})
    share = 1.0
    if r.use_gpu and r.num_workers == 1:
        from trainables.config import TrialConfig
        from trainables.memory_plan import GB, trial_bytes, trials_per_gpu, weight_bytes

        trains = any(v.trains for v in spec.expanded_variants())
        cfg = TrialConfig(model=spec.model, data=spec.data, train=spec.train, eval=spec.eval, resources=r)
        config = model_config(spec)
        need = trial_bytes(cfg, config, trains=trains)
        if gpu_bytes is None:
            node = probe_gpu_node()
            gpu_bytes, host, mps = node.gpu_bytes, host or (node.host_bytes, node.gpus), node.mps
        total = gpu_bytes
        n = trials_per_gpu(need, total)
        share = 1.0 / n
        weights = weight_bytes(cfg, config)
        if r.start_ahead == "auto" and ahead and host is not None and not waiting_fits(weights, ahead, host[1], host[0]):
            fits = [a for a in range(ahead - 1, 0, -1) if waiting_fits(weights, a, host[1], host[0])]
            print(f"start_ahead: {fits[0] if fits else 0} — {ahead} per GPU × {host[1]} GPU(s) × {weights / GB:.1f} GB "
                  f"of waiting weights would take more than {HOST_SHARE_FOR_WAITING:.0%} of the node's "
                  f"{host[0] / GB:.0f} GB host memory", file=out)
            ahead = fits[0] if fits else 0
        print(f"GPU sharing (resources.gpus_per_worker=auto): {n} trial(s) per GPU — planned {need / GB:.1f} GB "
              f"per trial of {total / GB:.0f} GB (trials report their peak as mem/peak_gpu_gb)"
              + (f"; {ahead} more per GPU start(s) ahead, weights in host memory until a slot frees "
                 "(resources.start_ahead)" if ahead else "") + mps_note(n, mps), file=out)
    return spec.model_copy(update={"resources": r.model_copy(update={"gpus_per_worker": share, "start_ahead": ahead})})

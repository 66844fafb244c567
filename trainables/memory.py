"""Peak memory of the process running a trial (reported as `mem/peak_rss_gb`, `mem/peak_gpu_gb`)."""

from __future__ import annotations

import resource
import sys

from trainables.metric_keys import mem_key

GB = 2**30


def peak_rss_gb() -> float:
    """The highest resident set size this process has reached so far, in GiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GB if sys.platform == "darwin" else peak * 1024 / GB  # bytes on macOS, KiB on Linux


def peak_gpu_gb() -> float | None:
    """The most CUDA memory PyTorch has allocated in this process, in GiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / GB


def memory_metrics() -> dict[str, float]:
    """{'mem/peak_rss_gb': …, and 'mem/peak_gpu_gb': … when CUDA is in use}."""
    out = {mem_key("peak_rss_gb"): peak_rss_gb()}
    gpu = peak_gpu_gb()
    if gpu is not None:
        out[mem_key("peak_gpu_gb")] = gpu
    return out

"""Peak memory of the process running a trial (reported as `mem/peak_rss_gb`, `mem/peak_gpu_gb`)."""

from __future__ import annotations

import resource
import sys

from trainables.metric_keys import mem_key

GB = 2**30


def peak_rss_gb() -> float:
    """The highest resident set size this process has reached so far, in GiB.

    On Linux, the kernel's high-water mark of this program (`VmHWM`): `ru_maxrss` starts a child
    at its parent's resident size when it was forked and keeps it across exec, so a trial started
    from a large process (a test runner, a notebook) would report its parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GB  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GB if sys.platform == "darwin" else peak * 1024 / GB  # bytes on macOS, KiB on Linux


def peak_gpu_gb() -> float | None:
    """The most CUDA memory PyTorch has allocated in this process, in GiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / GB


def grow_segments() -> bool:
    """Let this process's CUDA allocations from now on grow expandable segments (True when set).

    Segments that grow instead of new blocks per batch shape: trials sharing a GPU then hold what
    they use, not what fragmentation left reserved. Set once the weights are loaded, which need no
    growing. (It was suspected of the trials' slow load — 7.6-14.6 s in study run 11 against the
    cache build's 1.6 s — but set after the load in runs 12-13 the trials still took 7.9-14.4 s:
    it is not the cause.)"""
    import torch

    try:
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    except (RuntimeError, AttributeError) as err:  # an allocator that refuses it: keep the default
        print(f"memory: expandable segments not set ({type(err).__name__}: {err})", flush=True)
        return False
    return True


def memory_metrics() -> dict[str, float]:
    """{'mem/peak_rss_gb': …, and 'mem/peak_gpu_gb': … when CUDA is in use}."""
    out = {mem_key("peak_rss_gb"): peak_rss_gb()}
    gpu = peak_gpu_gb()
    if gpu is not None:
        out[mem_key("peak_gpu_gb")] = gpu
    return out

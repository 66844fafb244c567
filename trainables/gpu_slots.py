"""Starting trials ahead of a free GPU share (`resources.start_ahead`).

A trial spends its first ~45 s (study run 11, one H100) off the GPU's compute: Ray starting its
worker, loading the tokenizer and weights, tokenising, waiting for a teacher cache. With trials
sharing a GPU n ways, Ray is asked for 1/(n + start_ahead) of it per trial, so that start_ahead
more trials per GPU start while n run; each of those loads its weights into host memory and then
waits here for one of the GPU's n slots before it puts anything on the device. The slots are
file locks on the trial's host, one set per experiment and GPU: a worker that dies releases its
slot with its process. On one H100 (study runs 12 and 13) the study's sweep took 424 s with 1
trial started ahead and 398 s with 2, its GPU busy 69.1% and 73.4% of it (run 11, none: 54.4%).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from trainables.config import ResourcesConfig, TrialConfig
from trainables.memory_plan import gpu_share

if TYPE_CHECKING:
    import torch

#: Seconds between a waiting trial's attempts to take a slot.
POLL_S = 0.2


def shares_per_gpu(r: ResourcesConfig) -> int:
    """How many trials use one GPU at once: 1/gpus_per_worker for fractions, else 1."""
    share = gpu_share(r)
    return max(1, round(1.0 / share)) if share < 1.0 else 1


def ahead(r: ResourcesConfig) -> int:
    """Trials per GPU started ahead of a free slot (0 off the GPU, for multi-worker trials, or unresolved 'auto')."""
    if not r.use_gpu or r.num_workers != 1 or not isinstance(r.start_ahead, int):
        return 0
    if isinstance(r.gpus_per_worker, float) and r.gpus_per_worker > 1.0:
        return 0
    return r.start_ahead


def ray_gpu_fraction(r: ResourcesConfig) -> float:
    """GPUs per worker asked of Ray: the memory share, or 1/(n + start_ahead) when trials start ahead."""
    a = ahead(r)
    return 1.0 / (shares_per_gpu(r) + a) if a else gpu_share(r)


def slot_dir(experiment_dir: str, gpu_id: str) -> Path:
    """The folder of one experiment's slot locks for one GPU, in the host's temporary directory."""
    tag = hashlib.sha256(f"{os.path.abspath(experiment_dir)}\0{gpu_id}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "lamtune-gpu-slots" / tag


def gpu_id(device_index: int = 0) -> str:
    """A name of the CUDA device this process uses that every process on the host agrees on (its UUID)."""
    import torch

    props = torch.cuda.get_device_properties(device_index)
    uuid = getattr(props, "uuid", None)
    return str(uuid) if uuid is not None else f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}:{props.pci_bus_id}"


class GpuSlot:
    """One of a GPU's n slots, held from `acquire` until `release` or the process's end."""

    def __init__(self, directory: Path, n: int) -> None:
        self.directory, self.n = directory, n
        self.held: IO[bytes] | None = None
        self.index: int | None = None

    def try_acquire(self) -> bool:
        """Take a free slot now if there is one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            f = (self.directory / f"slot-{i}.lock").open("a+b")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self.held, self.index = f, i
            return True
        return False

    def acquire(self, timeout_s: float | None = None) -> float:
        """Wait for a free slot and take it; returns the seconds waited (TimeoutError past timeout_s)."""
        t0 = time.perf_counter()
        while not self.try_acquire():
            waited = time.perf_counter() - t0
            if timeout_s is not None and waited > timeout_s:
                raise TimeoutError(f"no GPU slot of {self.n} freed in {timeout_s:.0f}s ({self.directory})")
            time.sleep(POLL_S)
        return time.perf_counter() - t0

    def release(self) -> None:
        """Give the slot back (closing the file drops its lock)."""
        if self.held is not None:
            self.held.close()
            self.held, self.index = None, None


def trial_slot(cfg: TrialConfig, device: "torch.device") -> GpuSlot | None:
    """The slot a trial on `device` takes before using it, or None when trials do not start ahead."""
    if device.type != "cuda" or not cfg.experiment_dir or ahead(cfg.resources) == 0:
        return None
    return GpuSlot(slot_dir(cfg.experiment_dir, gpu_id(device.index or 0)), shares_per_gpu(cfg.resources))

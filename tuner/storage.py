"""The sweep's storage folder is checked before any trial starts: writable, and with room to spare.

A sweep writes trial folders, checkpoints, predictions and results there for hours; finding out
at the first checkpoint that the disk is read-only or full loses the trials' work.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

#: Free space a sweep asks of its storage before it starts (checkpoints, predictions, results).
MIN_FREE_BYTES = 1 << 30


class StorageError(ValueError):
    """The storage folder cannot take the sweep's results."""


def check_storage(storage: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Raise StorageError (one line) unless `storage` can be created, written and has `min_free` bytes free."""
    try:
        storage.mkdir(parents=True, exist_ok=True)
        probe = storage / f".lamtune-write-probe-{uuid.uuid4().hex}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise StorageError(f"--storage {storage}: not writable ({err.strerror or err}); "
                           "give a writable folder with --storage or $LAMTUNE_STORAGE") from None
    free = shutil.disk_usage(storage).free
    if free < min_free:
        raise StorageError(f"--storage {storage}: only {free / 2**20:.0f} MiB free, a sweep needs at least "
                           f"{min_free / 2**20:.0f} MiB (checkpoints, predictions, results)")

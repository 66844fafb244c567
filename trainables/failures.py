"""Why a trial failed, and whether trying again can help.

Transient: the GPU ran out of memory (another trial on the device peaked at the same time), a
worker process or node was lost (preemption, the kernel's OOM killer), a worker group timed out
starting. Deterministic: everything else — a non-finite loss, a config or data error — which would
fail the same way again, so it is never retried.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Fragments of an error's text that mark it transient, with the reason shown to the user.
TRANSIENT_MARKERS: tuple[tuple[str, str], ...] = (
    ("OutOfMemoryError", "GPU out of memory"),
    ("CUDA out of memory", "GPU out of memory"),
    # Ray Train cuts long worker errors short: these survive from torch's OOM message.
    ("PYTORCH_CUDA_ALLOC_CONF", "GPU out of memory"),
    ("GiB memory in use", "GPU out of memory"),
    ("running low on memory", "killed by the out-of-memory killer"),
    ("out of memory", "out of memory"),
    # Ray's words for a worker that vanished (SIGKILL, the kernel's OOM killer, a segfault).
    ("worker process has died", "a worker process died (killed or crashed)"),
    ("SIGKILL", "worker killed (SIGKILL)"),
    ("OOM", "killed by the out-of-memory killer"),
    ("ActorDiedError", "a worker process died"),
    ("ActorUnavailableError", "a worker process was lost"),
    ("RayActorError", "a worker process died"),
    ("NodeDiedError", "a node was lost"),
    ("preempt", "preempted"),
    ("WorkerGroupStartupTimeoutError", "workers timed out starting"),
    ("NCCL", "NCCL communication failed"),
)
#: Errors that are never transient, whatever their text says.
DETERMINISTIC_MARKERS: tuple[str, ...] = ("non-finite loss", "FloatingPointError", "ValidationError", "CacheError",
                                          "ModelUnavailable")
RETRIES_FILE = "retries.json"
#: A trial's failure for good (deterministic, or transient past its retries), with the sweep's Ray job.
FAILED_FILE = "failed_for_good.json"


def failure_text(err: BaseException) -> str:
    """The error with its causes (Ray wraps a worker's exception several levels deep)."""
    parts, seen = [], set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def transient_reason(err: BaseException) -> str | None:
    """Why the failure is transient (worth a retry), or None when it is deterministic."""
    text = failure_text(err)
    if any(m in text for m in DETERMINISTIC_MARKERS):
        return None
    for marker, reason in TRANSIENT_MARKERS:
        if marker in text:
            return reason
    return None


def one_line(err: BaseException) -> str:
    """The innermost meaningful line of an error, for the sweep's output."""
    lines = [ln.strip() for ln in failure_text(err).splitlines() if ln.strip()]
    for marker in DETERMINISTIC_MARKERS:
        hits = [ln for ln in lines if marker in ln]
        if hits:
            return hits[-1][:300]
    for marker, reason in TRANSIENT_MARKERS:
        hits = [ln for ln in lines if marker in ln]
        if hits:  # Ray may have cut the line's head off (", this process has 41.72 GiB ..."): name the reason
            line = hits[-1].lstrip(",;: ")
            return (line if line.lower().startswith(reason.lower()) else f"{reason}: {line}")[:300]
    return (lines[-1] if lines else type(err).__name__)[:300]


def record_retry(trial_dir: str | Path, attempt: int, reason: str, error: str) -> None:
    """Append one retry to the trial's retries file."""
    path = Path(trial_dir) / RETRIES_FILE
    rows = read_retries(trial_dir)
    rows.append({"attempt": attempt, "reason": reason, "error": error, "time": time.time()})
    path.write_text(json.dumps(rows, indent=1))


def read_retries(trial_dir: str | Path) -> list[dict[str, Any]]:
    """The retries recorded in a trial's folder ([] when none)."""
    path = Path(trial_dir) / RETRIES_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def record_failed_for_good(trial_dir: str | Path, message: str, job: str) -> None:
    """Mark the trial as failed for good in this sweep (its Ray job), with the reason it gives."""
    (Path(trial_dir) / FAILED_FILE).write_text(json.dumps({"message": message, "job": job, "time": time.time()}))


def failed_for_good(trial_dir: str | Path, job: str) -> str | None:
    """The reason the trial already failed for good in this sweep (its Ray job), or None.

    Tune retries a failed trial (`FailureConfig`) whatever the cause; a retry of one that failed for
    good answers with this reason at once instead of running again. A resumed sweep is a new job,
    so its trials run again."""
    try:
        row = json.loads((Path(trial_dir) / FAILED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return row.get("message") if row.get("job") == job else None

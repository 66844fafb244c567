"""The on-disk teacher cache: written once per sweep, memory-mapped read-only by every trial.

Layout of one cache (one teacher mode of one sweep's settings)::

    <root>/<fingerprint>/manifest.json     key fields, K, per task: file, sha256, example ids, offsets
    <root>/<fingerprint>/<task>.arrow      Arrow IPC file, one row per answer token:
        topk_ids       fixed_size_list<int32>[K]   the teacher's top-K vocabulary ids
        topk_logprobs  fixed_size_list<float16>[K] their log-probabilities (T = 1)
        tail_logmass   float32   log(1 − Σ top-K probabilities): the tail bucket
        logsumexp      float32   the log-normaliser (raw logits = logprobs + logsumexp)
        gold_id        int32     the answer token (checked against the student's target)
        gold_logprob   float32   the teacher's log-prob of the answer token (diagnostics)
        entropy        float32   the teacher's exact entropy over the vocabulary (nats)

The fingerprint hashes everything that changes the teacher's numbers (model id + revision,
tokenizer, prompt template version, shots k, shot-sampling seed, K, mode, alignment, data);
example ids key the rows inside. Files are written to a temporary name and renamed (atomic),
and checked against their sha256 when opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from trainables.losses import TeacherTopK

MANIFEST = "manifest.json"
COLUMNS = ("topk_ids", "topk_logprobs", "tail_logmass", "logsumexp", "gold_id", "gold_logprob", "entropy")


class CacheError(RuntimeError):
    """A teacher cache is missing, incomplete, corrupted or does not match the trial."""


def fingerprint(key: dict[str, Any]) -> str:
    """The short stable hash naming the cache directory for these key fields."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class TokenRows:
    """Teacher statistics for a run of answer tokens (numpy arrays, one row per token)."""

    topk_ids: np.ndarray       # [n, K] int32
    topk_logprobs: np.ndarray  # [n, K] float16
    tail_logmass: np.ndarray   # [n] float32
    logsumexp: np.ndarray      # [n] float32
    gold_id: np.ndarray        # [n] int32
    gold_logprob: np.ndarray   # [n] float32
    entropy: np.ndarray        # [n] float32


class CacheWriter:
    """Accumulates one task's examples in order and writes the task file atomically."""

    def __init__(self, directory: Path, key: dict[str, Any], top_k: int) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.top_k = top_k
        self.tasks: dict[str, dict[str, Any]] = {}

    def write_task(self, task: str, example_ids: Sequence[str], rows: Sequence[TokenRows]) -> None:
        """Write one task's rows (rows[i] belongs to example_ids[i]) as an Arrow file."""
        if len(example_ids) != len(rows):
            raise ValueError("one TokenRows per example id is required")
        if len(set(example_ids)) != len(example_ids):
            raise ValueError(f"duplicate example ids in task {task}")
        lengths = [len(r.gold_id) for r in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cat = {c: np.concatenate([getattr(r, c) for r in rows]) if rows else None for c in COLUMNS}
        k = self.top_k
        if rows and cat["topk_ids"].shape[1] != k:
            raise ValueError(f"rows have K={cat['topk_ids'].shape[1]}, cache K={k}")

        def fixed(a: np.ndarray | None, dtype: Any, pa_type: Any) -> pa.Array:
            flat = np.zeros(0, dtype) if a is None else np.ascontiguousarray(a, dtype=dtype).ravel()
            return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa_type), k)

        def flat(a: np.ndarray | None, dtype: Any) -> pa.Array:
            return pa.array(np.zeros(0, dtype) if a is None else np.asarray(a, dtype=dtype))

        table = pa.table({
            "topk_ids": fixed(cat["topk_ids"], np.int32, pa.int32()),
            "topk_logprobs": fixed(cat["topk_logprobs"], np.float16, pa.float16()),
            "tail_logmass": flat(cat["tail_logmass"], np.float32),
            "logsumexp": flat(cat["logsumexp"], np.float32),
            "gold_id": flat(cat["gold_id"], np.int32),
            "gold_logprob": flat(cat["gold_logprob"], np.float32),
            "entropy": flat(cat["entropy"], np.float32),
        })
        path = self.dir / f"{task}.arrow"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        os.replace(tmp, path)
        self.tasks[task] = {
            "file": path.name,
            "sha256": _sha256(path),
            "n_examples": len(example_ids),
            "n_tokens": int(offsets[-1]),
            "example_ids": list(example_ids),
            "offsets": offsets.tolist(),
            "max_topk_id": int(cat["topk_ids"].max()) if rows and offsets[-1] else -1,
        }

    def finish(self, extra: dict[str, Any] | None = None) -> Path:
        """Write the manifest (atomically, last: its presence marks the cache complete)."""
        manifest = {"key": self.key, "top_k": self.top_k, "tasks": self.tasks, **(extra or {})}
        tmp = self.dir / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest, default=str))
        os.replace(tmp, self.dir / MANIFEST)
        return self.dir


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether a finished cache (manifest present) exists at `directory`."""
    return (Path(directory) / MANIFEST).is_file()


def failed_marker(directory: str | os.PathLike) -> Path:
    """The file a sweep writes beside a cache whose build failed (its one-line reason inside)."""
    d = Path(directory)
    return d.parent / f".{d.name}.failed"


def wait_for_cache(directory: str | os.PathLike, timeout_s: float, poll_s: float = 1.0) -> float:
    """Wait until the cache at `directory` is complete (a sweep builds it while its trials start);
    returns the seconds waited. A build that failed, or one not done within `timeout_s`, is a
    CacheError naming why (not retried)."""
    if is_complete(directory):
        return 0.0
    t0 = time.monotonic()
    marker = failed_marker(directory)
    while not is_complete(directory):
        if marker.is_file():
            raise CacheError(f"teacher cache {Path(directory).name} could not be built: {marker.read_text().strip()}")
        if time.monotonic() - t0 > timeout_s:
            raise CacheError(f"teacher cache {directory} not built after {timeout_s:.0f}s (teacher.wait_s)")
        time.sleep(poll_s)
    return time.monotonic() - t0


class TeacherCache:
    """Read-only view of a cache: memory-mapped Arrow files and an index from example id to rows."""

    def __init__(self, directory: str | os.PathLike, verify: bool = True, vocab_size: int | None = None) -> None:
        """Open the cache; with `vocab_size` (the student's output rows) every top-K id must be below it."""
        self.dir = Path(directory)
        if not is_complete(self.dir):
            raise CacheError(f"no complete teacher cache at {self.dir} (run `python -m tuner cache build`)")
        self.manifest = json.loads((self.dir / MANIFEST).read_text())
        self.top_k: int = int(self.manifest["top_k"])
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._index: dict[tuple[str, str], tuple[int, int]] = {}
        for task, meta in self.manifest["tasks"].items():
            path = self.dir / meta["file"]
            if not path.is_file():
                raise CacheError(f"teacher cache file {path} is missing (the cache is damaged; rebuild it)")
            if verify and _sha256(path) != meta["sha256"]:
                raise CacheError(f"teacher cache file {path} does not match its checksum")
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            self._arrays[task] = {c: _column(table, c, self.top_k) for c in COLUMNS}
            offs = meta["offsets"]
            for i, ex_id in enumerate(meta["example_ids"]):
                self._index[(task, ex_id)] = (offs[i], offs[i + 1])
            if vocab_size is not None:
                self._check_ids(task, meta, vocab_size)

    def _check_ids(self, task: str, meta: dict[str, Any], vocab_size: int) -> None:
        """Raise CacheError when a cached top-K id of `task` is outside the student's vocabulary."""
        ids = self._arrays[task]["topk_ids"]
        top = meta.get("max_topk_id", int(ids.max()) if ids.size else -1)
        if top >= vocab_size:
            raise CacheError(f"teacher cache {self.dir} ({task}) holds token id {top}, outside the student's "
                             f"vocabulary of {vocab_size}: the teacher used another tokenizer; rebuild the cache")

    @property
    def key(self) -> dict[str, Any]:
        """The key fields this cache was built for."""
        return self.manifest["key"]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def rows(self, task: str, example_id: str) -> TokenRows:
        """The teacher rows of one example's answer tokens (views into the mapped file)."""
        try:
            start, end = self._index[(task, example_id)]
        except KeyError:
            raise CacheError(f"example {example_id!r} of task {task!r} is not in the teacher cache {self.dir}") from None
        a = self._arrays[task]
        return TokenRows(**{c: a[c][start:end] for c in COLUMNS})

    def gather(self, keys: Iterable[tuple[str, str]]) -> tuple[TeacherTopK, dict[str, torch.Tensor]]:
        """Teacher top-K tensors for the concatenated answer tokens of `keys`, plus diagnostics
        (gold_id, gold_logprob, entropy as [N] tensors)."""
        parts = [self.rows(t, i) for t, i in keys]

        def cat(c: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.concatenate([getattr(p, c) for p in parts])).to(dtype)

        topk = TeacherTopK(
            ids=cat("topk_ids", torch.long),
            logprobs=cat("topk_logprobs", torch.float32),
            tail_logmass=cat("tail_logmass", torch.float32),
            logsumexp=cat("logsumexp", torch.float32),
        )
        diag = {c: cat(c, torch.long if c == "gold_id" else torch.float32) for c in ("gold_id", "gold_logprob", "entropy")}
        return topk, diag


def _column(table: pa.Table, name: str, k: int) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if isinstance(col.type, pa.FixedSizeListType):
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, k)
    return col.to_numpy(zero_copy_only=False)

"""Build the teacher caches a sweep needs: run each teacher once over every training example and
keep its top-K log-probs (+ tail mass) at the positions that predict the answer tokens.

Modes: `fewshot` (the base model shown k demonstrations from the English training pool),
`zeroshot` (the base model shown the student's prompt: the control), `checkpoint` (a separate
model given by path, zero-shot unless teacher.checkpoint_shots).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from trainables.alignment import Encoded, collate
from trainables.config import TrialConfig, teacher_compile_enabled
from trainables.data import TrainExample, teacher_encodings, training_pools, training_set
from trainables.gpu_slots import trial_slot
from trainables.models import (
    AnswerSpanLM, compile_decoder_layers, load_model, load_tokenizer, model_identity, model_path,
)
from trainables.prompts import TEMPLATE_VERSION
from trainables.teacher.cache import CacheError, CacheWriter, TeacherCache, TokenRows, fingerprint, is_complete
from trainables.teacher.checkpoint import check_tokenizer, check_vocab_rows, checkpoint_identity

log = logging.getLogger(__name__)

TEACHER_MODES: tuple[str, ...] = ("fewshot", "zeroshot", "checkpoint")


def cache_key(cfg: TrialConfig, mode: str) -> dict[str, Any]:
    """Every setting that changes a teacher cache's numbers or its set of examples."""
    if mode not in TEACHER_MODES:
        raise ValueError(f"teacher mode must be one of {', '.join(TEACHER_MODES)}, got {mode!r}")
    if mode == "checkpoint" and not cfg.teacher.checkpoint:
        raise ValueError("teacher mode 'checkpoint' needs teacher.checkpoint (a model path)")
    d = cfg.data
    uses_shots = mode == "fewshot" or (mode == "checkpoint" and cfg.teacher.checkpoint_shots)
    return {
        "model": model_identity(cfg.model),
        "teacher_model": ({"path": cfg.teacher.checkpoint, **checkpoint_identity(cfg.teacher.checkpoint)}
                          if mode == "checkpoint" else "base"),
        # 'auto' means bf16 on a GPU that has it, fp32 on CPU: the teacher's device decides.
        "dtype": cfg.model.dtype if cfg.model.dtype != "auto" else f"auto/{'gpu' if cfg.teacher.use_gpu else 'cpu'}",
        "template": TEMPLATE_VERSION,
        "mode": mode,
        "shots": {t: d.shots[t] for t in d.tasks} if uses_shots else 0,
        "shot_seed": d.seed,
        "top_k": cfg.teacher.top_k,
        "alignment": cfg.train.kd_alignment,
        "data": {"source": d.source, "tasks": d.tasks, "train_lang": d.train_lang, "train_split": d.train_split,
                 "max_train_per_task": d.max_train_per_task, "max_student_len": d.max_student_len,
                 "max_teacher_len": d.max_teacher_len, "synthetic_sizes": d.synthetic_sizes, "seed": d.seed},
    }


def cache_dir(cfg: TrialConfig, root: str | Path, mode: str) -> Path:
    """Directory of the cache for this config and teacher mode under `root`."""
    return Path(root) / f"{mode}-{fingerprint(cache_key(cfg, mode))}"


_STAT_NAMES = ("ids", "lp", "tail", "lse", "gold", "gold_lp", "ent")


def length_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int = 0) -> list[list[int]]:
    """Indices grouped into batches by length (shortest first): at most `batch_size` examples and, when
    `batch_tokens` > 0, at most that many padded tokens each (a longer example still gets a batch)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        b = batches[-1] if batches else None
        # Ascending order: the newcomer is the batch's longest, so it sets the padded width.
        if b is not None and len(b) < batch_size and (not batch_tokens or (len(b) + 1) * lengths[i] <= batch_tokens):
            b.append(i)
        else:
            batches.append([i])
    return batches


#: Answer rows whose vocabulary statistics are computed at once: bounds the fp32 temporaries
#: (log-probs, their exponent, the tail's scatter) to ~1 GB each at a 128k vocabulary, however
#: many answer tokens a token-budgeted batch holds.
STATS_ROWS = 2048


def answer_stats(logits: torch.Tensor, targets: torch.Tensor, top_k: int,
                 vocab_limit: int | None = None) -> tuple[torch.Tensor, ...]:
    """The cache's per-token statistics from the teacher's answer-span logits [N, V], in row chunks:
    top-K ids and log-probs, log tail mass, logsumexp, gold id, gold log-prob, entropy."""
    parts = []
    for lo in range(0, max(logits.shape[0], 1), STATS_ROWS):  # an empty span still gives empty statistics
        chunk, gold = logits[lo:lo + STATS_ROWS].float(), targets[lo:lo + STATS_ROWS]
        lse = torch.logsumexp(chunk, dim=-1)
        logp = chunk - lse[:, None]  # log_softmax
        limit = min(vocab_limit or logp.shape[-1], logp.shape[-1])
        top_lp, top_ids = logp[:, :limit].topk(min(top_k, limit), dim=-1)
        # Exact log tail mass: logsumexp over the ids outside the top-K (−inf when K = V).
        tail = torch.logsumexp(logp.scatter(-1, top_ids, float("-inf")), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        gold_lp = logp.gather(-1, gold[:, None]).squeeze(-1)
        parts.append((top_ids.int(), top_lp.half(), tail, lse, gold.int(), gold_lp, entropy))
    return tuple(torch.cat(ts) for ts in zip(*parts))


@torch.no_grad()
def teacher_rows(
    span_lm: AnswerSpanLM, encodings: Sequence[Encoded], pad_id: int, top_k: int, batch_size: int,
    device: torch.device, alignment: str = "causal", vocab_limit: int | None = None, batch_tokens: int = 0,
) -> list[TokenRows]:
    """Top-K statistics of the teacher at each example's answer tokens (batched by length, see
    `length_batches`).

    Pipelined: a batch's statistics are copied to pinned host memory without blocking, and the
    host slices them into rows while the GPU already runs the next batch.

    With `vocab_limit` (the student's output rows, when the teacher's layer is wider) the top-K
    is taken over ids < vocab_limit and the extra rows' probability goes to the tail bucket."""
    out: list[TokenRows | None] = [None] * len(encodings)
    pending: tuple[list[int], dict[str, torch.Tensor], Any] | None = None

    def unpack(idx: list[int], host: dict[str, torch.Tensor], ready: Any) -> None:
        if ready is not None:
            ready.synchronize()
        cpu = {n: t.numpy() for n, t in host.items()}
        bounds = np.concatenate([[0], np.cumsum([encodings[i].answer_len for i in idx])])
        for j, i in enumerate(idx):
            s, e = bounds[j], bounds[j + 1]
            out[i] = TokenRows(cpu["ids"][s:e], cpu["lp"][s:e], cpu["tail"][s:e], cpu["lse"][s:e],
                               cpu["gold"][s:e], cpu["gold_lp"][s:e], cpu["ent"][s:e])

    for idx in length_batches([len(e.input_ids) for e in encodings], batch_size, batch_tokens):
        batch = collate([encodings[i] for i in idx], pad_id, "right", alignment).to(device)
        logits = span_lm(batch.input_ids, batch.attention_mask, batch.position_ids, batch.rows, batch.kd_cols)
        stats = answer_stats(logits, batch.targets, top_k, vocab_limit)
        cuda = device.type == "cuda"
        # non_blocking device→host copies land in pinned memory; `ready` marks their end.
        host = {n: t.to("cpu", non_blocking=cuda) for n, t in zip(_STAT_NAMES, stats)}
        ready = torch.cuda.Event() if cuda else None
        if ready is not None:
            ready.record()
        if pending is not None:
            unpack(*pending)  # the previous batch, while this one runs on the GPU
        pending = (idx, host, ready)
    if pending is not None:
        unpack(*pending)
    return [r for r in out if r is not None]


def student_vocab_rows(cfg: TrialConfig) -> int:
    """The student's output rows (its config's vocab_size), read without loading its weights."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model_path(cfg.model), revision=cfg.model.revision).vocab_size)


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold the exclusive build lock of one cache directory (two sweeps needing it build it once)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_problem(directory: Path) -> str | None:
    """Why the cache at `directory` cannot be used (missing, incomplete, damaged), or None when it can."""
    if not is_complete(directory):
        return "incomplete" if directory.exists() else "missing"
    try:
        TeacherCache(directory, verify=True)
    except (CacheError, OSError, ValueError, KeyError) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def teacher_device(cfg: TrialConfig, device: str | None) -> torch.device:
    """Where the teacher runs: `device` when given, else the GPU when teacher.use_gpu and there is one."""
    return torch.device(device or ("cuda" if cfg.teacher.use_gpu and torch.cuda.is_available() else "cpu"))


def build_caches(cfg: TrialConfig, root: str | Path, modes: Sequence[str], device: str | None = None) -> list[Path]:
    """Build the caches of `modes` one after another in this process and return their directories;
    modes with the same teacher weights (fewshot, zeroshot: the base model) load and compile it once."""
    teachers: dict[str | None, Teacher] = {}
    data: dict[str, Any] = {}
    # Beside trials started ahead of a free GPU slot, the build holds one of the slots while it runs.
    slot = trial_slot(cfg, teacher_device(cfg, device))
    if slot is not None:
        slot.acquire()
    try:
        return [build_cache(cfg, root, mode, device, teachers, data) for mode in modes]
    finally:
        if slot is not None:
            slot.release()


def build_cache(cfg: TrialConfig, root: str | Path, mode: str, device: str | None = None,
                teachers: dict[str | None, Teacher] | None = None, data: dict[str, Any] | None = None) -> Path:
    """Build (unless a sound one exists) the cache of one teacher mode and return its directory.

    Under the directory's lock: a complete cache that passes its checksums is kept; anything else
    (half-written by a killed build, damaged) is replaced. The cache is written into a private
    folder and renamed into place when complete, so no reader ever sees a partial cache.
    `teachers` keeps loaded teachers (by weights path, None for the base model) for later builds,
    `data` the training pools and examples (the same for every mode)."""
    directory = cache_dir(cfg, root, mode)
    with build_lock(directory):
        problem = cache_problem(directory)
        if problem is None:
            log.info("teacher cache %s already built", directory)
            return directory
        for leftover in directory.parent.glob(f"{directory.name}.partial-*"):  # killed builds' folders
            shutil.rmtree(leftover, ignore_errors=True)
        partial = directory.with_name(f"{directory.name}.partial-{uuid.uuid4().hex[:8]}")
        _build_into(cfg, partial, mode, device, teachers, data)
        if directory.exists():
            log.warning("teacher cache %s was %s: replaced", directory, problem)
            shutil.rmtree(directory)
        os.replace(partial, directory)
    return directory


@dataclass
class Teacher:
    """A loaded teacher, kept for the next cache built from the same weights in this process."""

    model: torch.nn.Module
    span_lm: AnswerSpanLM
    load_s: float  # seconds to load its weights
    compiled: bool = False  # its layers compiled (compilation itself runs in the first forward)


def load_teacher(cfg: TrialConfig, dev: torch.device, path: str | None) -> Teacher:
    """The teacher model (the base model, or the checkpoint at `path`) on `dev`, in eval mode."""
    t0 = time.perf_counter()
    model = load_model(cfg.model, dev, trainable=False, path=path)
    return Teacher(model, AnswerSpanLM(model), time.perf_counter() - t0)


def compile_teacher(cfg: TrialConfig, teacher: Teacher, dev: torch.device, tokens: int) -> None:
    """Compile the teacher's layers (once) when a build of `tokens` teacher tokens repays it."""
    if not teacher.compiled and teacher_compile_enabled(cfg.teacher, dev.type, tokens):
        compile_decoder_layers(teacher.model)  # ~60% → ~80% of the bf16 peak on an H200 (bench/gpu_speed.py)
        teacher.compiled = True


def _build_into(cfg: TrialConfig, directory: Path, mode: str, device: str | None,
                teachers: dict[str | None, Teacher] | None = None, data: dict[str, Any] | None = None) -> None:
    """Run the teacher of `mode` over every training example and write the cache into `directory`."""
    dev = teacher_device(cfg, device)
    tokenizer = load_tokenizer(cfg.model)
    path = cfg.teacher.checkpoint if mode == "checkpoint" else None
    student_rows = None
    if mode == "checkpoint":
        check_tokenizer(path, tokenizer)  # before any data is read or model loaded
        student_rows = student_vocab_rows(cfg)
    started = time.perf_counter()
    data = {} if data is None else data
    if not data:  # a later build in this process reuses them (study run 11: 2.2 s and 3.0 s for the two modes)
        data["pools"] = training_pools(cfg)
        data["examples"] = training_set(cfg, tokenizer, data["pools"])
    pools, examples = data["pools"], data["examples"]
    data_s = time.perf_counter() - started
    teachers = {} if teachers is None else teachers
    reused = path in teachers
    if not reused:
        teachers[path] = load_teacher(cfg, dev, path)
    teacher = teachers[path]
    if mode == "checkpoint":
        check_vocab_rows(teacher.model.config.vocab_size, student_rows, len(tokenizer))
    shots = mode == "fewshot" or (mode == "checkpoint" and cfg.teacher.checkpoint_shots)
    writer = CacheWriter(directory, cache_key(cfg, mode), cfg.teacher.top_k)
    phases = {"encode_s": 0.0, "forward_s": 0.0, "write_s": 0.0}
    started, n_tokens = time.perf_counter(), 0
    by_task: dict[str, tuple[list[TrainExample], list[Encoded]]] = {}
    for task in cfg.data.tasks:
        task_examples: list[TrainExample] = [e for e in examples if e.task == task]
        encs = teacher_encodings(cfg, tokenizer, task_examples, pools[task], shots)
        for e, t in zip(task_examples, encs):
            if t.answer_ids != e.student.answer_ids:  # guaranteed by construction; checked anyway
                raise AssertionError(f"teacher and student answer tokens differ for {e.key}")
        by_task[task] = (task_examples, encs)
    phases["encode_s"] = time.perf_counter() - started
    task_tokens = {task: sum(len(e.input_ids) for e in encs) for task, (_, encs) in by_task.items()}
    compile_teacher(cfg, teacher, dev, sum(task_tokens.values()))  # the build's size decides
    forward_by_task: dict[str, float] = {}
    for task, (task_examples, encs) in by_task.items():
        t1 = time.perf_counter()
        rows = teacher_rows(teacher.span_lm, encs, tokenizer.pad_token_id, cfg.teacher.top_k, cfg.teacher.batch_size,
                            dev, cfg.train.kd_alignment, vocab_limit=student_rows, batch_tokens=cfg.teacher.batch_tokens)
        t2 = time.perf_counter()  # teacher_rows has waited for its last batch: the GPU work is done
        writer.write_task(task, [e.record["id"] for e in task_examples], rows)
        # The first forward of a compiled teacher includes compiling its layers.
        forward_by_task[task] = t2 - t1
        phases["write_s"] += time.perf_counter() - t2
        n_tokens += sum(len(r.gold_id) for r in rows)
    phases["forward_s"] = sum(forward_by_task.values())
    seconds = time.perf_counter() - started
    stats = {"seconds": seconds, "answer_tokens": n_tokens, "teacher_tokens": sum(task_tokens.values()),
             "device": str(dev), "compiled": teacher.compiled,
             # Where the time went: data (pools, training set), the teacher's load (0 when an earlier
             # build in this process loaded these weights), tokenising the teacher's prompts, its
             # forward passes (per task too, with each task's teacher tokens), writing the rows.
             "data_s": data_s, "load_s": 0.0 if reused else teacher.load_s, **phases,
             "forward_by_task_s": forward_by_task, "teacher_tokens_by_task": task_tokens}
    writer.finish({"vocab_rows": student_rows or teacher.model.config.vocab_size, "stats": stats})
    log.info("built teacher cache %s: %d answer tokens in %.1fs", directory, n_tokens, seconds)

"""A sweep of 8 trials the seed's way (each trial with its own online teacher) against lamtune's
(the teacher caches built once, then trials training from them, as 1, 2, … trial processes sharing
the GPU), timed end to end. Each of our trials runs the product's own `train_step`."""

from __future__ import annotations

import gc
import time
from typing import Any, Callable

import torch

from bench.harness import Shape, build_model, peak_gb, random_ids, reset_peak, sync
from bench.product_step import ProductStep
from bench.seed_step import SeedStep
from trainables.alignment import Encoded
from trainables.models import AnswerSpanLM
from trainables.teacher.build import teacher_rows


SWEEP_TRIALS = [("sft", 0.0), ("control", 0.05), ("control", 0.5), ("distill", 0.05), ("distill", 0.1),
                ("distill", 0.2), ("distill", 0.5), ("distill", 1.0)]


def run_trials(s: Shape, device: torch.device, dtype: torch.dtype, steps: int, lams: list[float]) -> None:
    """Our trials one after another in this process: each builds its own student (one model copy, no
    teacher), compiles it and trains from the cache, as a Tune trial process does. LoRA dropout is
    the seed's (and the product's default) 0.05."""
    for lam in lams:
        torch._dynamo.reset()  # a fresh trial process has no compiled graphs (the on-disk caches stay)
        st = ProductStep(s, device, dtype, "lora", 0.05, compile=True, lam=lam)
        for _ in range(steps):
            st.step()
        sync(device)
        del st
        gc.collect()


def _trial_process(s: Shape, device: str, dtype: torch.dtype, steps: int, lams: list[float], start: Any) -> None:
    """A trial process sharing the GPU (Tune with resources.gpus_per_worker < 1): waits for the start
    signal, then runs its trials."""
    start.wait()
    run_trials(s, torch.device(device), dtype, steps, lams)


def build_caches(s: Shape, device: torch.device, dtype: torch.dtype, steps: int) -> None:
    """The two caches once (few-shot at teacher length, zero-shot at student length), for every
    example the trials see, through the product's teacher_rows()."""
    base = build_model(s, device, dtype).requires_grad_(False)
    span = AnswerSpanLM(base)
    for length in (s.teacher_len, s.student_len):
        ids = random_ids(s, steps * s.batch, length, device, 5).cpu()
        encs = [Encoded(tuple(r.tolist()), length - s.answer) for r in ids]
        teacher_rows(span, encs, 0, s.top_k, 16, device)
    del base, span
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_sweep(s: Shape, device: torch.device, dtype: torch.dtype, steps: int, parallel: list[int],
                progress: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    """8 trials (SFT, control λ 0.05/0.5, distill λ 0.05/0.1/0.2/0.5/1.0) the seed's way and ours,
    ours with 1, 2, … trial processes sharing the GPU."""
    import multiprocessing as mp

    out: dict[str, Any] = {"trials": len(SWEEP_TRIALS), "steps_per_trial": steps}
    # The seed's way: every trial loads its own student and teacher copy and runs the teacher online
    # (the zero-shot control's teacher reads the student-length prompt).
    t0 = time.perf_counter()
    reset_peak(device)
    for cond, lam in SWEEP_TRIALS:
        st = SeedStep(s, device, dtype, lam=lam, teacher_len=s.student_len if cond == "control" else None)
        for _ in range(steps):
            st.step(use_teacher=cond != "sft")
        sync(device)
        st.close()
        del st
        gc.collect()
    out["seed_s"] = time.perf_counter() - t0
    out["seed_peak_gb"] = peak_gb(device)
    print(f"  sweep seed: {out['seed_s']:.1f}s", flush=True)
    progress(out)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    lams = [lam for _, lam in SWEEP_TRIALS]
    out["ours"] = {}
    for n in parallel:
        t0 = time.perf_counter()
        reset_peak(device)
        build_caches(s, device, dtype, steps)
        r: dict[str, Any] = {"cache_s": time.perf_counter() - t0}
        if n == 1:
            run_trials(s, device, dtype, steps, lams)
            r["peak_gb"] = peak_gb(device)
        else:
            # Trial processes start (import, CUDA context) while the cache builds in a real sweep
            # too (Tune starts trials once the cache task returns): the clock includes their start.
            ctx = mp.get_context("spawn")
            start = ctx.Event()
            procs = [ctx.Process(target=_trial_process, args=(s, str(device), dtype, steps, lams[i::n], start))
                     for i in range(n)]
            for proc in procs:
                proc.start()
            start.set()
            for proc in procs:
                proc.join()
            if any(proc.exitcode for proc in procs):
                r["error"] = f"trial process exit codes {[proc.exitcode for proc in procs]}"
        r["total_s"] = time.perf_counter() - t0
        r["speedup"] = out["seed_s"] / r["total_s"]
        out["ours"][f"x{n}"] = r
        print(f"  sweep ours, {n} trial process(es) on the device: {r}", flush=True)
        progress(out)
    return out

"""GPU speed benchmark: the seed study's training step and way of sweeping against lamtune's, measured
side by side in one run, on a Llama-3.2-3B-shaped model with random bf16 weights.

    python bench/gpu_speed.py --out bench/results/h200.json            # on the GPU machine
    python bench/gpu_speed.py --tiny --out /tmp/b.json                 # logic check on a CPU

Sections (--sections, comma-separated; default all but `sweep`, which is long):
  peak      bf16 matrix-product rate (the ceiling every share is measured against)
  seed      the seed's step (bench/seed_step.py): frozen second model copy runs the 5-shot teacher
            prompt online, PEFT LoRA r=16 student (dropout 0.05, all linear projections), MSE on
            top-256 raw logits
  ours      lamtune's trial step, the product's own trainables.loop.train_step (bench/product_step.py):
            cache gather, logits only at the answer span, forward KL on top-K + tail, fixed λ policy,
            AdamW as the product builds it, bookkeeping; LoRA (dropout 0.05 and 0), full FT; eager
            and torch.compile. Variant names (--variants): lora_d<dropout>_<eager|compile|compilefull>
            or full_<eager|compile>; suffix _peft32 keeps PEFT's fp32 adapter compute, _cg compiles
            with CUDA graphs (mode reduce-overhead), _meta runs the study's meta-λ policy (split
            KD gradients and a dev forward+backward every 10 steps) instead of fixed λ, _graphs records the
            decoder's forward and backward as CUDA graphs (the product's train.cuda_graphs; eager
            variants only), _hfnorm keeps transformers' RMSNorm (the product's model.fused_norm off),
            _peftlora PEFT's LoRA forward (model.lean_lora off).
            Each variant and the seed's step (measured
            before and after them) run in a fresh process unless --in-process.
  graphs_check  the product's step with train.cuda_graphs against eager, same weights and batches:
            each step's loss and the largest relative difference
  cache     lamtune's teacher-cache build (trainables.teacher.build.teacher_rows): tokens/s, share of peak
  generate  greedy decoding step time (HF generate) at several batch sizes → the 15,000-example eval
  sweep     (bench/sweep_sim.py) 8 trials the seed's way (each with its own online teacher) vs ours (cache once, then
            trials reading it, as --sweep-parallel trial processes sharing the GPU), wall time end to end
  profile   GPU kernel time per step of one variant of ours (--profile-variant), by category
Speed does not depend on weight values, so weights are random. Each figure is the median of timed
repetitions after warm-up, with CUDA synchronisation; peak memory is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    STUDY, TINY, Shape, build_model, n_params, peak_gb, random_ids, reset_peak, result_key, sync, timed,
)
from bench.product_step import ProductStep  # noqa: E402
from bench.seed_step import bench_seed  # noqa: E402
from bench.sweep_sim import bench_sweep  # noqa: E402
from trainables.alignment import Encoded  # noqa: E402
from trainables.fused_norm import use_fused_norm  # noqa: E402
from trainables.metric_keys import train_key  # noqa: E402
from trainables.models import AnswerSpanLM, compile_decoder_layers  # noqa: E402
from trainables.teacher.build import teacher_rows  # noqa: E402

# --------------------------------------------------------------------------- sections


def bench_peak(device: torch.device, tiny: bool) -> dict[str, float]:
    """Measured bf16 matrix-product rate (TFLOP/s)."""
    n = 256 if tiny else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = timed(lambda: a @ b, device, 3, 10)
    return {"tflops": 2 * n**3 / t / 1e12, "n": n}


#: Variant name suffixes, in the order they may follow the base name.
SUFFIXES = ("_peft32", "_cg", "_graphs", "_hfnorm", "_peftlora", "_meta")


def _base_variant(variant: str) -> str:
    """A variant's base name (finetune, dropout, compile) without its suffixes."""
    for suffix in reversed(SUFFIXES):
        variant = variant.removesuffix(suffix)
    return variant


def graphs_check(s: Shape, device: torch.device, dtype: torch.dtype, steps: int = 6) -> dict[str, Any]:
    """The product's step with recorded decoder passes against the same step eager, from the same
    weights and batches (LoRA dropout 0, so both see the same computation): each step's loss."""
    losses = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        st = ProductStep(s, device, dtype, "lora", 0.0, False, graphs=graphs)
        losses["graphs" if graphs else "eager"] = [st.step()[train_key("loss")] for _ in range(steps)]
        del st
    diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses["graphs"], losses["eager"]))
    return {**losses, "max_rel_diff": diff, "steps": steps}


#: Base variant names: (finetune, LoRA dropout, compile: False, True (layer by layer) or "full").
BASES: dict[str, tuple[str, float, bool | str]] = {
    "lora_d0.05_eager": ("lora", 0.05, False), "lora_d0_eager": ("lora", 0.0, False),
    "lora_d0_compile": ("lora", 0.0, True), "lora_d0.05_compile": ("lora", 0.05, True),
    "lora_d0_compilefull": ("lora", 0.0, "full"), "lora_d0.05_compilefull": ("lora", 0.05, "full"),
    "full_eager": ("full", 0.0, False), "full_compile": ("full", 0.0, True),
}


def variant_step(s: Shape, device: torch.device, dtype: torch.dtype, variant: str) -> ProductStep:
    """The product's step as a variant name describes it (see the module docstring)."""
    finetune, dropout, comp = BASES[_base_variant(variant)]
    # "_peft32": PEFT's own adapter path (fp32 adapters, activations cast to fp32), as before
    # trainables.models.adapters_in_activation_dtype; "_cg": compiled with CUDA graphs.
    return ProductStep(s, device, dtype, finetune, dropout, comp, fp32_adapter_compute="_peft32" in variant,
                       compile_mode="reduce-overhead" if "_cg" in variant else None,
                       policy="meta" if variant.endswith("_meta") else "fixed", graphs="_graphs" in variant,
                       fused_norm="_hfnorm" not in variant, lean_lora="_peftlora" not in variant)


def bench_ours(s: Shape, device: torch.device, dtype: torch.dtype, reps: int, variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in variants:
        name = result_key(variant, out)
        comp = BASES[_base_variant(variant)][2]
        reset_peak(device)
        try:
            st = variant_step(s, device, dtype, variant)
            t0 = time.perf_counter()
            st.step()  # the first step pays the compilation, as a trial's first step does
            sync(device)
            first = time.perf_counter() - t0
            # meta-λ probes every 10th step: its cost is the mean over whole periods of 10.
            meta = variant.endswith("_meta")
            # Its warm-up runs through the first probe (step 10), which compiles the dev pass's graphs.
            warmup = 10 if meta else 3 if comp else 2
            t = timed(st.step, device, warmup, 10 * max(1, reps // 10) if meta else reps, mean=meta)
            out[name] = {"step_s": t, "student_tok_s": s.batch * s.student_len / t, "peak_gb": peak_gb(device),
                         "first_step_s": first}
            del st
        except Exception as err:  # a variant failing must not lose the others
            out[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        print(f"  ours {name}: {out[name]}", flush=True)
    return out


def bench_cache(s: Shape, device: torch.device, dtype: torch.dtype, peak_tflops: float, reps: int,
                batches: list[int], compile_too: bool) -> dict[str, Any]:
    """Teacher-cache build throughput through the product's own teacher_rows()."""
    reset_peak(device)
    model = build_model(s, device, dtype).requires_grad_(False)
    p = n_params(model)
    out: dict[str, Any] = {"params": p}
    n_seq = max(batches) * 4
    ids = random_ids(s, n_seq, s.teacher_len, device, 3).cpu()
    encs = [Encoded(tuple(row.tolist()), s.teacher_len - s.answer) for row in ids]
    # Eager with the product's fused RMSNorm, then transformers' own (model.fused_norm off), then compiled.
    for comp, fused in ([(False, True), (False, False), (True, True)] if compile_too else [(False, True), (False, False)]):
        use_fused_norm(model, fused)
        if comp:
            compile_decoder_layers(model)
        fwd = AnswerSpanLM(model)
        for b in batches:
            name = f"b{b}_{'compile' if comp else 'eager'}{'' if fused else '_hfnorm'}"
            try:
                t = timed(lambda: teacher_rows(fwd, encs, 0, s.top_k, b, device), device, 1, max(2, reps // 2))
                tok_s = n_seq * s.teacher_len / t
                out[name] = {"tok_s": tok_s, "share_of_peak": 2 * p * tok_s / (peak_tflops * 1e12),
                             "peak_gb": peak_gb(device)}
            except Exception as err:
                out[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            print(f"  cache {name}: {out[name]}", flush=True)
    del model
    return out


def bench_generate(s: Shape, device: torch.device, dtype: torch.dtype, batches: list[int], prompt: int,
                   new: int, static: bool = False) -> dict[str, Any]:
    """Per-decoding-step time of HF greedy generate, and the 15,000-example evaluation it implies."""
    reset_peak(device)
    model = build_model(s, device, dtype).requires_grad_(False)
    out: dict[str, Any] = {}
    for b in batches:
        ids = random_ids(s, b, prompt, device, 4)
        mask = torch.ones_like(ids)

        def run(n: int) -> None:
            extra = {"cache_implementation": "static"} if static else {}
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0, **extra)

        try:
            t_full = timed(lambda: run(new), device, 1, 2)
            t_one = timed(lambda: run(1), device, 1, 2)
        except Exception as err:
            out[f"b{b}"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            continue
        out[f"b{b}"] = {"prefill_s": t_one, "decode_step_s": (t_full - t_one) / (new - 1), "peak_gb": peak_gb(device)}
        print(f"  generate b{b}: {out[f'b{b}']}", flush=True)
    # The study's evaluation: 5 tasks × 6 languages × 500, worst case (random weights never stop).
    per_task_new = {"nli": 8, "pa": 4, "qa": 80, "ner": 150, "pos": 150}
    ok = [k for k in out if "decode_step_s" in out[k]]
    if not ok:
        return out
    best = min(ok, key=lambda k: out[k]["decode_step_s"] / int(k[1:]))
    b = int(best[1:])
    steps = sum(math.ceil(3000 / b) * n for n in per_task_new.values())
    prefills = sum(math.ceil(3000 / b) for _ in per_task_new)
    out["eval_15000_estimate_s"] = steps * out[best]["decode_step_s"] + prefills * out[best]["prefill_s"]
    out["eval_estimate_batch"] = b
    del model
    return out


def bench_profile(s: Shape, device: torch.device, dtype: torch.dtype, variant: str) -> dict[str, Any]:
    """Where one variant's step time goes: kernel time by category over 5 profiled steps, and the
    step's wall time (the GPU idles for the rest)."""
    from torch.profiler import ProfilerActivity, profile

    st = variant_step(s, device, dtype, variant)
    for _ in range(3):
        st.step()
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(5):
            st.step()
        sync(device)
    wall = (time.perf_counter() - t0) / 5
    cats: dict[str, float] = {}
    top = []
    from torch.autograd import DeviceType

    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0)
        if t <= 0 or getattr(e, "device_type", None) == DeviceType.CPU:
            continue  # kernels only: a CPU op's device time repeats its kernels' time
        name = e.key.lower()
        cat = ("gemm" if any(k in name for k in ("gemm", "cutlass", "sm90", "nvjet", "matmul", "mm_")) else
               "attention" if any(k in name for k in ("flash", "attention", "sdpa", "fmha")) else
               "optimizer" if any(k in name for k in ("adam", "foreach", "multi_tensor")) else
               "triton (fused elementwise)" if "triton" in name else "other")
        cats[cat] = cats.get(cat, 0.0) + t / 5 / 1e3  # ms per step
        top.append((t / 5 / 1e3, e.key[:90]))
    top.sort(reverse=True)
    # The host's side: a step whose kernels take less than its wall time waits for the CPU to issue them.
    host = sorted(((e.self_cpu_time_total / 5 / 1e3, e.key[:90]) for e in prof.key_averages()
                   if getattr(e, "device_type", None) == DeviceType.CPU and e.self_cpu_time_total > 0), reverse=True)
    out = {"variant": variant, "top_host_ops_ms": host[:15], "wall_ms_per_step": wall * 1e3, "gpu_ms_per_step_by_category": cats,
           "gpu_busy_ms_per_step": sum(cats.values()), "top_kernels_ms": top[:15]}
    print(f"  profile {variant}: {out['wall_ms_per_step']:.1f} ms/step wall, GPU busy {out['gpu_busy_ms_per_step']:.1f} ms", flush=True)
    for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
        print(f"    {k:<28}{v:8.1f} ms", flush=True)
    for t, name in top[:12]:
        print(f"    {t:8.2f} ms  {name}", flush=True)
    print("    host ops by self CPU time per step:", flush=True)
    for t, name in host[:12]:
        print(f"    {t:8.2f} ms  {name}", flush=True)
    return out


# --------------------------------------------------------------------------- report


def table(res: dict[str, Any]) -> str:
    """The human-readable summary with ratios against the seed."""
    lines = []
    seed = res.get("seed", {})
    st = seed.get("student_tok_s")
    peak = res.get("peak", {}).get("tflops")
    if peak:
        lines.append(f"measured bf16 peak: {peak:.0f} TFLOP/s")
    if st:
        lines.append(f"{'step':<34}{'student tok/s':>14}{'× seed':>9}{'peak GB':>9}")
        lines.append(f"{'seed (online teacher, LoRA, MSE)':<34}{st:>14,.0f}{1.0:>9.2f}{seed['peak_gb']:>9.1f}")
        if "student_tok_s_first" in seed:
            lines.append(f"  (mean of {seed['student_tok_s_first']:,.0f} before and "
                         f"{res['seed_end']['student_tok_s']:,.0f} after our variants)")
    if res.get("ours"):
        lines.append(f"{'our step (shape ' + res.get('shape_name', 'default') + ')':<34}{'student tok/s':>14}"
                     f"{'× seed':>9}{'peak GB':>9}{'step ms':>9}{'1st step s':>11}")
    for name, r in res.get("ours", {}).items():
        if "student_tok_s" in r:
            ratio = r["student_tok_s"] / st if st else float("nan")
            lines.append(f"{'ours ' + name:<34}{r['student_tok_s']:>14,.0f}{ratio:>9.2f}{r['peak_gb']:>9.1f}"
                         f"{r['step_s'] * 1e3:>9.1f}{r.get('first_step_s', float('nan')):>11.1f}")
        else:
            lines.append(f"{'ours ' + name:<34}  {r.get('error')}")
    for name, r in res.get("cache", {}).items():
        if isinstance(r, dict) and "tok_s" in r:
            lines.append(f"cache build {name:<22}{r['tok_s']:>14,.0f} tok/s  {100 * r['share_of_peak']:.1f}% of peak"
                         f"  {r['peak_gb']:.1f} GB")
    g = res.get("generate", {})
    if "eval_15000_estimate_s" in g:
        lines.append(f"evaluation of 15,000 examples (worst case, batch {g['eval_estimate_batch']}): "
                     f"{g['eval_15000_estimate_s']:.0f} s")
    sw = res.get("sweep")
    if sw:
        lines.append(f"sweep of {sw['trials']} trials × {sw['steps_per_trial']} steps: seed {sw['seed_s']:.0f} s")
        for name, r in sw["ours"].items():
            lines.append(f"  ours, {name[1:]} trial process(es) at once: {r['total_s']:.0f} s "
                         f"(cache {r['cache_s']:.0f} s) → {r['speedup']:.2f}×" + (f"  {r['error']}" if "error" in r else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (checks the logic on a CPU)")
    ap.add_argument("--shape", choices=["default", "study"], default="default",
                    help="batch shapes: default (256-token prompts, 32-token answers) or study (the study "
                         "bench's measured lengths: 124-token prompts, 12-token answers)")
    ap.add_argument("--sections", default="peak,seed,ours,cache,generate")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variants", default="lora_d0.05_eager,lora_d0_eager,lora_d0_compile,full_eager,full_compile")
    ap.add_argument("--profile-variant", default="lora_d0_compile", help="the `ours` variant the profile section profiles")
    ap.add_argument("--cache-batches", default="8,16")
    ap.add_argument("--cache-compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the cache build with compiled decoder layers (~100 s to compile at 3B)")
    ap.add_argument("--gen-batches", default="256,1024")
    ap.add_argument("--sweep-steps", type=int, default=100)
    ap.add_argument("--sweep-parallel", default="1,2", help="trial processes sharing the GPU, one sweep each")
    ap.add_argument("--gen-static", action="store_true", help="generate with a static KV cache")
    ap.add_argument("--in-process", action="store_true",
                    help="measure the seed's step and each variant in this process (default: a fresh process "
                         "each, so compiled graphs, CUDA-graph pools and allocator state never carry over)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    s = TINY if args.tiny else STUDY if args.shape == "study" else Shape()
    torch.backends.cuda.matmul.allow_tf32 = True
    sections = args.sections.split(",")
    res: dict[str, Any] = {"shape": s.__dict__, "shape_name": "tiny" if args.tiny else args.shape, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                           "command": " ".join(sys.argv)}
    import transformers
    res["transformers"] = transformers.__version__

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))

    res["peak"] = bench_peak(device, args.tiny)
    print("peak", res["peak"], flush=True)
    n_variants = len(args.variants.split(","))
    isolate = not args.in_process and "ours" in sections and ("seed" in sections or n_variants > 1)

    def measure(section: str, variant: str | None = None) -> dict[str, Any]:
        """One section (or one variant of `ours`), in this process or in a fresh one."""
        if not isolate:
            if section == "seed":
                return bench_seed(s, device, dtype, args.reps)
            return bench_ours(s, device, dtype, args.reps, [variant or ""])[variant or ""]
        tmp = args.out.with_suffix(f".{section}.{variant or 'step'}.json")
        cmd = [sys.executable, __file__, "--out", str(tmp), "--sections", section, "--reps", str(args.reps)]
        cmd += ["--variants", variant] if variant else []
        cmd += ["--tiny"] if args.tiny else ["--shape", args.shape]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not tmp.exists():
            return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        got = json.loads(tmp.read_text())
        tmp.unlink()
        return got[section] if section == "seed" else got["ours"][variant]

    if "seed" in sections:
        res["seed"] = measure("seed")
        print("seed", res["seed"], flush=True)
        save()
    if "ours" in sections:
        res["ours"] = {}
        for v in args.variants.split(","):
            key = result_key(v, res["ours"])
            res["ours"][key] = measure("ours", v)
            if isolate:  # in-process, bench_ours has printed it
                print(f"  ours {key}: {res['ours'][key]}", flush=True)
            save()
    if "seed" in sections and "ours" in sections:
        # The seed's step again after ours: the ratios use the mean of both, so clock drift over
        # the run counts against neither side.
        res["seed_end"] = measure("seed")
        print("seed (again)", res["seed_end"], flush=True)
        first = res["seed"]["student_tok_s"]
        res["seed"]["student_tok_s_first"] = first
        res["seed"]["student_tok_s"] = (first + res["seed_end"]["student_tok_s"]) / 2
        save()
    if "graphs_check" in sections:
        res["graphs_check"] = graphs_check(s, device, dtype)
        print("graphs_check", res["graphs_check"], flush=True)
        save()
    if "cache" in sections:
        batches = [int(b) for b in args.cache_batches.split(",")]
        res["cache"] = bench_cache(s, device, dtype, res["peak"]["tflops"], args.reps, batches, args.cache_compile)
        save()
    if "generate" in sections:
        batches = [int(b) for b in args.gen_batches.split(",")]
        res["generate"] = bench_generate(s, device, dtype, batches if not args.tiny else [2, 4], 256 if not args.tiny else 16,
                                         16 if not args.tiny else 4, args.gen_static)
        save()
    if "profile" in sections:
        res["profile"] = bench_profile(s, device, dtype, args.profile_variant)
        save()
    if "sweep" in sections:
        def progress(partial: dict[str, Any]) -> None:
            res["sweep"] = partial
            save()

        res["sweep"] = bench_sweep(s, device, dtype, args.sweep_steps if not args.tiny else 2,
                                   [int(n) for n in args.sweep_parallel.split(",")], progress)
        save()
    print()
    print(table(res))
    save()


if __name__ == "__main__":
    main()

"""Evaluation decoding through the product's own `trainables.evaluate.predict`, in the same run on
the same items: eager (the baseline), then adding one lever at a time — each batch's decoding step
replayed as a CUDA graph, grouped-head decoding attention, decoding tensors and recorded step
reused across batches, LoRA merged into weight copies, every task's items in one pass, a prefix
shared by several prompts prefilled once, RMSNorm by torch's rms_norm (all of them: the product's
default).
Generated tok/s, examples/s, the ratio to eager, and whether the texts are the same.

    python bench/generation_gpu.py --data /tmp/xs/xtreme-sample --out $OUT        # on the GPU machine
    python bench/generation_gpu.py --shape llama-test --data ../shared/data/xtreme-sample --out /tmp/g --per-pair 2

The student is what an `sft` trial evaluates (`trainables.loop.setup`: the model, LoRA adapters
with small random lora_B so that merging them is not a no-op, compiled decoder layers run eager
while decoding), on the study benchmark's random-weight model
and tokenizer (the product's `random:<shape>`, built once under --work/home). Random weights decode
to every task's token budget: the worst case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def profile_decoding(state: Any, cfg: Any, device: Any, task: str = "ner") -> dict[str, Any]:
    """One task's dev items decoded eagerly (grouped attention) under torch.profiler: the GPU's
    busy time per decoding step against the step's wall time, and the kernels that take it."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from trainables.evaluate import predict
    from trainables.generation import GenerationStats

    items = [it for it in state.dev_items if it.task == task]
    run_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"cuda_graphs": False})})
    stats = GenerationStats()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof, \
            torch.compiler.set_stance("force_eager"):
        t0 = time.perf_counter()
        predict(state.model, state.tokenizer, items, run_cfg, device, stats)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.self_device_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:12]
    steps = max(1, stats.decode_steps)
    return {"task": task, "items": len(items), "decode_steps": stats.decode_steps, "wall_ms_per_step": round(1000 * wall / steps, 2),
            "gpu_busy_ms_per_step": round(gpu_us / 1000 / steps, 2),
            "top_kernels": [{"name": e.key[:90], "ms_per_step": round(e.self_device_time_total / 1000 / steps, 3),
                             "calls_per_step": round(e.count / steps, 1)} for e in top]}


def profile_prefill(state: Any, cfg: Any, device: Any, rows: int = 64) -> dict[str, Any]:
    """The evaluation's prefill alone, on a GPU the bench has to itself: the product's admissions
    (`_Decoder.admit`, LoRA merged as in `predict`) of every item's prompt, longest first, in runs
    of similar lengths as the product prefills them (`length_runs` at PREFILL_LENGTH_RATIO), at most
    `rows` at a time, under torch.profiler. Prompt tokens per second (real and padded), the share of
    the bf16 peak, the GPU's busy share of the wall time, and the kernels that take it.

    (Generation run 5, 2026-12-08, chunked 64 prompts at a time without the runs: one 2,948-token
    MLQA prompt padded its chunk to 9.7× the real tokens.)"""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.study_gpu import H200_BF16_PEAK
    from trainables.decode_attention import decoding_attention
    from trainables.generation import PREFILL_LENGTH_RATIO, length_runs, open_session
    from trainables.kv_cache import cache_len
    from trainables.merged_lora import merged_lora
    from trainables.models import causal_lm

    prompts = sorted((list(it.prompt_ids) for it in [*state.dev_items, *state.test_items]), key=len, reverse=True)
    lm = causal_lm(state.model)
    n_params = sum(p.numel() for p in lm.parameters())
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    padded = 0
    was_training = state.model.training
    state.model.eval()
    try:
        with torch.no_grad(), merged_lora(state.model, cfg.eval.merge_lora), \
                torch.compiler.set_stance("force_eager"):
            session = open_session(state.model, state.tokenizer, cfg.eval.stop_strings, device, False)
            dec, _ = session.decoder_for(rows, cache_len(len(prompts[0]), 1), 1)
            with profile(activities=activities) as prof, decoding_attention(lm):
                t0 = time.perf_counter()
                chunks = [run[at:at + rows] for run in length_runs(prompts, len, PREFILL_LENGTH_RATIO)
                          for at in range(0, len(run), rows)]
                for chunk in chunks:
                    dec.reset()
                    dec.admit(list(range(len(chunk))), chunk, [1] * len(chunk))
                    padded += len(chunk) * len(chunk[0])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t0
            session.close()
    finally:
        state.model.train(was_training)
    tokens = sum(map(len, prompts))
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_s = sum(e.self_device_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:12]
    return {"prompts": len(prompts), "rows": rows, "prompt_tokens": tokens, "padded_tokens": padded,
            "seconds": round(wall, 2), "tok_per_s": round(tokens / wall), "padded_tok_per_s": round(padded / wall),
            "pct_of_bf16_peak": round(100 * 2 * n_params * padded / wall / H200_BF16_PEAK, 1),
            "gpu_busy_pct": round(100 * gpu_s / wall, 1) if events else None,
            "top_kernels": [{"name": e.key[:90], "s": round(e.self_device_time_total / 1e6, 3), "calls": e.count}
                            for e in top]}


def nonzero_adapters(model: Any, scale: float = 0.02) -> None:
    """Give every lora_B small seeded random values (PEFT starts them at zero, which would make
    the merged setting trivially exact): the student of a trial after some training."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_((torch.randn(p.shape, generator=g) * scale).to(p.device, p.dtype))


def compare(cfg: Any, device: Any, repeat: bool = False, profile: bool = False
            ) -> tuple[dict[str, Any], int, dict[str, int]]:
    """Evaluation decoding of an sft student's dev items, eager, then adding one lever at a time
    (CUDA graphs, grouped attention, reused decoders, merged LoRA, pooled tasks, shared prefixes, fused
    RMSNorm: the default): figures per
    setting, the item count, and how many items' texts differ from the eager setting's."""
    import torch

    from trainables.evaluate import predict
    from trainables.fused_norm import use_fused_norm
    from trainables.generation import GenerationStats
    from trainables.loop import setup

    state = setup(cfg, "generation-bench", 0, 1, device)
    nonzero_adapters(state.model)
    items = state.dev_items
    settings: dict[str, Any] = {}
    texts: dict[bool, list[str]] = {}
    # Each setting adds one lever to the one before (the last is the product's default); eager
    # first: no warm cache favours the others.
    levers = ("cuda_graphs", "grouped_attention", "reuse_decoder", "merge_lora", "pool_tasks", "share_prefixes")
    # The last lever is the model's, not evaluation's: RMSNorm by torch's rms_norm (model.fused_norm).
    variants = [("eager", {}), ("cuda_graphs", {"cuda_graphs"}), ("cuda_graphs+grouped", {"cuda_graphs", "grouped_attention"}),
                ("+reuse", {"cuda_graphs", "grouped_attention", "reuse_decoder"}),
                ("+merged", {"cuda_graphs", "grouped_attention", "reuse_decoder", "merge_lora"}),
                ("+pooled tasks", set(levers) - {"share_prefixes"}),
                ("+shared prefixes", set(levers)),
                ("+fused RMSNorm (default)", {*levers, "fused_norm"})]
    for name, on in variants * (2 if repeat else 1):
        use_fused_norm(state.model, "fused_norm" in on)
        run_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={k: k in on for k in levers})})
        stats = GenerationStats()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.compiler.set_stance("force_eager"):
            texts[name] = predict(state.model, state.tokenizer, items, run_cfg, device, stats)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        settings[name] = {
            "seconds": round(seconds, 2), "examples": stats.sequences, "generated_tokens": stats.generated_tokens,
            "decode_steps": stats.decode_steps, "batches": stats.batches, "decoders": stats.decoders,
            "gen_tok_per_s": round(stats.generated_tokens / seconds), "examples_per_s": round(stats.sequences / seconds, 1),
            "ms_per_decode_step": round(1000 * seconds / max(1, stats.decode_steps), 2),
            # The generation's own split on the GPU's clock (trainables.generation.SpanClock).
            "prefill_s": round(stats.prefill_s, 2), "decode_s": round(stats.decode_s, 2),
            "prompt_tokens": stats.prompt_tokens, "prefill_tokens": stats.prefill_tokens,
            "prefix_tokens": stats.prefix_tokens}
    differ = {name: sum(a != b for a, b in zip(texts[name], texts["eager"])) for name in texts if name != "eager"}
    if profile:
        settings["profile"] = profile_decoding(state, cfg, device)
        settings["prefill"] = profile_prefill(state, cfg, device)
    del state
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return settings, len(items), differ


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both settings on the same student and items; their figures and the ratio."""
    import torch

    from bench.study_gpu import ensure_model
    from trainables.config import TrialConfig
    from trainables.tasks.schema import DEFAULT_MAX_NEW_TOKENS
    from trainables.generation import graphs_off_reason

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Exactness first, where greedy decoding has clear winners: the shipped pre-trained tiny default
    # in fp32 on its synthetic tasks (random 3B weights in bf16 have near-ties that a different
    # cuBLAS kernel choice under capture can flip).
    tiny = TrialConfig.model_validate({
        "model": {"name": "tiny", "dtype": "float32"}, "variant": {"condition": "sft"},
        "data": {"max_train_per_task": 10, "synthetic_sizes": {"train": 20, "dev": 20, "test": 5}},
        "eval": {"dev_per_pair": 10, "test_per_pair": 1},
        "resources": {"use_gpu": device.type == "cuda", "gpus_per_worker": 1.0}})
    tiny_settings, tiny_items, tiny_differ = compare(tiny, device)
    model_dir, n_params = ensure_model(args.shape, args.data, args.work)
    cfg = TrialConfig.model_validate({
        "model": {"name": str(model_dir)}, "variant": {"condition": "sft"},
        "data": {"source": f"local:{args.data}", "train_split": "dev", "max_train_per_task": 10},
        "eval": {"dev_per_pair": args.per_pair, "test_per_pair": 1, "test_split": "dev",
                 "max_new_tokens": {t: min(n, args.max_new) for t, n in DEFAULT_MAX_NEW_TOKENS.items()}},
        "resources": {"use_gpu": device.type == "cuda", "gpus_per_worker": 1.0},
    })
    settings, n_items, differ = compare(cfg, device, args.repeat, args.profile)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
                           "shape": args.shape, "parameters": n_params, "device": str(device),
                           "items": n_items, "settings": settings}
    eager = settings["eager"]
    out["ratio_tok_per_s"] = {name: round(s["gen_tok_per_s"] / eager["gen_tok_per_s"], 2)
                              for name, s in settings.items() if name not in ("eager", "profile", "prefill")}
    out["differing_texts_vs_eager"] = differ
    out["tiny_fp32_check"] = {"items": tiny_items, "differing_texts": tiny_differ, "settings": tiny_settings}
    out["graphs_off_reason"] = graphs_off_reason()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the XTREME sample folder")
    p.add_argument("--out", type=Path, required=True, help="folder for generation.json")
    p.add_argument("--work", type=Path, default=Path("/tmp/lamtune-study"))
    p.add_argument("--shape", default="llama-3.2-3b", help="a random: architecture of the product")
    p.add_argument("--per-pair", type=int, default=20, help="dev examples per (task, language)")
    p.add_argument("--max-new", type=int, default=32,
                   help="token budget per task, at most (the eager baseline runs ~116 ms per step on the 3B shape)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one task's eager decoding, and the prefill of every item's prompt")
    p.add_argument("--repeat", action="store_true", help="measure each setting twice, alternating")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "generation.json").write_text(json.dumps(result, indent=1))
    lines = [f"generation benchmark {result['date']}: {result['shape']} on {result['device']}, "
             f"{result['items']} dev items"]
    for name, s in result["settings"].items():
        if name in ("profile", "prefill"):
            continue
        lines.append(f"  {name:<26} {s['seconds']:>7}s {s['gen_tok_per_s']:>8,} gen tok/s {s['examples_per_s']:>7} ex/s "
                     f"{s['ms_per_decode_step']:>7} ms/step  ({s['generated_tokens']:,} tokens, {s['decode_steps']} steps, "
                     f"{s['batches']} batches, {s['decoders']} decoders; prefill {s['prefill_s']}s "
                     f"({s['prefill_tokens'] / max(s['prefill_s'], 1e-9):,.0f} padded tok/s), decoding {s['decode_s']}s)")
    lines.append(f"  ratio to eager (gen tok/s): {result['ratio_tok_per_s']}; texts differing from eager's: "
                 f"{result['differing_texts_vs_eager']} of {result['items']}; graphs off: {result['graphs_off_reason']}")
    tiny = result["tiny_fp32_check"]
    lines.append(f"  exactness on the pre-trained tiny default (fp32): texts differing from eager's "
                 f"{tiny['differing_texts']} of {tiny['items']}")
    prof = result["settings"].get("profile")
    if prof:
        lines.append(f"  profile ({prof['task']}, {prof['items']} items, eager steps, grouped attention, merged LoRA): "
                     f"{prof['wall_ms_per_step']} ms wall, {prof['gpu_busy_ms_per_step']} ms GPU busy per step")
        lines += [f"    {k['ms_per_step']:>8} ms/step {k['calls_per_step']:>6}x  {k['name']}" for k in prof["top_kernels"]]
    pre = result["settings"].get("prefill")
    if pre:
        lines.append(f"  prefill alone ({pre['prompts']} dev + test prompts, {pre['rows']} a time, longest first, "
                     f"merged LoRA): {pre['tok_per_s']:,} prompt tok/s ({pre['padded_tok_per_s']:,} padded, "
                     f"{pre['pct_of_bf16_peak']}% of the bf16 peak), GPU busy {pre['gpu_busy_pct']}% of "
                     f"{pre['seconds']} s")
        lines += [f"    {k['s']:>8} s {k['calls']:>6}x  {k['name']}" for k in pre["top_kernels"]]
    text = "\n".join(lines) + "\n"
    (args.out / "generation.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

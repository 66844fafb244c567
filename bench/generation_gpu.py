"""Evaluation decoding through the product's own `trainables.evaluate.evaluate`, with each batch's
decoding step replayed as a CUDA graph (eval.cuda_graphs=true, the default) against the same step
launched eagerly (false), in the same run, on the same items: generated tok/s, examples/s, the ratio,
and whether both produced the same texts.

    python bench/generation_gpu.py --data /tmp/xs/xtreme-sample --out $OUT        # on the GPU machine
    python bench/generation_gpu.py --shape tiny --data ../shared/data/xtreme-sample --out /tmp/g --per-pair 2

The student is what an `sft` trial evaluates (`trainables.loop.setup`: the model, LoRA adapters,
compiled decoder layers run eager while decoding), on the study benchmark's random-weight model
and tokenizer (bench/study_gpu.py builds them, or reuses them from --work). Random weights decode
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


def compare(cfg: Any, device: Any, repeat: bool = False) -> tuple[dict[str, Any], int, int]:
    """Evaluation decoding of an sft student's dev items with and without CUDA graphs: figures per
    setting, the item count, and how many items' texts differ between the two."""
    import torch

    from trainables.evaluate import predict
    from trainables.generation import GenerationStats
    from trainables.loop import setup

    state = setup(cfg, "generation-bench", 0, 1, device)
    items = state.dev_items
    settings: dict[str, Any] = {}
    texts: dict[bool, list[str]] = {}
    for graphs in (False, True, False, True) if repeat else (False, True):  # eager first: no warm cache favours graphs
        run_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"cuda_graphs": graphs})})
        stats = GenerationStats()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.compiler.set_stance("force_eager"):
            texts[graphs] = predict(state.model, state.tokenizer, items, run_cfg, device, stats)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        settings["cuda_graphs" if graphs else "eager"] = {
            "seconds": round(seconds, 2), "examples": stats.sequences, "generated_tokens": stats.generated_tokens,
            "decode_steps": stats.decode_steps, "batches": stats.batches,
            "gen_tok_per_s": round(stats.generated_tokens / seconds), "examples_per_s": round(stats.sequences / seconds, 1),
            "ms_per_decode_step": round(1000 * seconds / max(1, stats.decode_steps), 2)}
    differ = sum(a != b for a, b in zip(texts[True], texts[False]))
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
    model_dir, n_params = ensure_model(args.shape, args.data, args.work / f"model-{args.shape}")
    cfg = TrialConfig.model_validate({
        "model": {"name": str(model_dir)}, "variant": {"condition": "sft"},
        "data": {"source": f"local:{args.data}", "train_split": "dev", "max_train_per_task": 10},
        "eval": {"dev_per_pair": args.per_pair, "test_per_pair": 1, "test_split": "dev",
                 "max_new_tokens": {t: min(n, args.max_new) for t, n in DEFAULT_MAX_NEW_TOKENS.items()}},
        "resources": {"use_gpu": device.type == "cuda", "gpus_per_worker": 1.0},
    })
    settings, n_items, differ = compare(cfg, device, args.repeat)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
                           "shape": args.shape, "parameters": n_params, "device": str(device),
                           "items": n_items, "settings": settings}
    eager, graphs = settings["eager"], settings["cuda_graphs"]
    out["ratio_tok_per_s"] = round(graphs["gen_tok_per_s"] / eager["gen_tok_per_s"], 2)
    out["same_texts"] = differ == 0
    out["differing_texts"] = differ
    out["tiny_fp32_check"] = {"items": tiny_items, "differing_texts": tiny_differ, "settings": tiny_settings}
    out["graphs_off_reason"] = graphs_off_reason()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the XTREME sample folder")
    p.add_argument("--out", type=Path, required=True, help="folder for generation.json")
    p.add_argument("--work", type=Path, default=Path("/tmp/lamtune-study"))
    p.add_argument("--shape", default="llama-3.2-3b")
    p.add_argument("--per-pair", type=int, default=20, help="dev examples per (task, language)")
    p.add_argument("--max-new", type=int, default=32,
                   help="token budget per task, at most (the eager baseline runs ~116 ms per step on the 3B shape)")
    p.add_argument("--repeat", action="store_true", help="measure each setting twice, alternating")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "generation.json").write_text(json.dumps(result, indent=1))
    lines = [f"generation benchmark {result['date']}: {result['shape']} on {result['device']}, "
             f"{result['items']} dev items"]
    for name, s in result["settings"].items():
        lines.append(f"  {name:<12} {s['seconds']:>7}s {s['gen_tok_per_s']:>8,} gen tok/s {s['examples_per_s']:>7} ex/s "
                     f"{s['ms_per_decode_step']:>7} ms/step  ({s['generated_tokens']:,} tokens, {s['decode_steps']} steps, "
                     f"{s['batches']} batches)")
    lines.append(f"  CUDA graphs / eager: {result['ratio_tok_per_s']}×; same texts: {result['same_texts']} "
                 f"({result['differing_texts']} differ); graphs off: {result['graphs_off_reason']}")
    tiny = result["tiny_fp32_check"]
    lines.append(f"  exactness on the pre-trained tiny default (fp32): {tiny['differing_texts']} of {tiny['items']} "
                 f"texts differ between CUDA graphs and eager")
    text = "\n".join(lines) + "\n"
    (args.out / "generation.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

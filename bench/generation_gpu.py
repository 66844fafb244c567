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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both settings on the same student and items; their figures and the ratio."""
    import torch

    from bench.study_gpu import ensure_model
    from trainables.config import TrialConfig
    from trainables.evaluate import predict
    from trainables.generation import GenerationStats, graphs_off_reason
    from trainables.loop import setup

    model_dir, n_params = ensure_model(args.shape, args.data, args.work / f"model-{args.shape}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrialConfig.model_validate({
        "model": {"name": str(model_dir)}, "variant": {"condition": "sft"},
        "data": {"source": f"local:{args.data}", "train_split": "dev", "max_train_per_task": 10},
        "eval": {"dev_per_pair": args.per_pair, "test_per_pair": 1, "test_split": "dev"},
        "resources": {"use_gpu": device.type == "cuda", "gpus_per_worker": 1.0},
    })
    state = setup(cfg, "generation-bench", 0, 1, device)
    items = state.dev_items
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
                           "shape": args.shape, "parameters": n_params, "device": str(device),
                           "items": len(items), "settings": {}}
    texts: dict[bool, list[str]] = {}
    for graphs in (False, True, False, True) if args.repeat else (False, True):  # eager first: no warm cache favours graphs
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
        out["settings"]["cuda_graphs" if graphs else "eager"] = {
            "seconds": round(seconds, 2), "examples": stats.sequences, "generated_tokens": stats.generated_tokens,
            "decode_steps": stats.decode_steps, "batches": stats.batches,
            "gen_tok_per_s": round(stats.generated_tokens / seconds), "examples_per_s": round(stats.sequences / seconds, 1),
            "ms_per_decode_step": round(1000 * seconds / max(1, stats.decode_steps), 2)}
    eager, graphs = out["settings"]["eager"], out["settings"]["cuda_graphs"]
    out["ratio_tok_per_s"] = round(graphs["gen_tok_per_s"] / eager["gen_tok_per_s"], 2)
    out["same_texts"] = texts[True] == texts[False]
    out["differing_texts"] = sum(a != b for a, b in zip(texts[True], texts[False]))
    out["graphs_off_reason"] = graphs_off_reason()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the XTREME sample folder")
    p.add_argument("--out", type=Path, required=True, help="folder for generation.json")
    p.add_argument("--work", type=Path, default=Path("/tmp/lamtune-study"))
    p.add_argument("--shape", default="llama-3.2-3b")
    p.add_argument("--per-pair", type=int, default=20, help="dev examples per (task, language)")
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
    text = "\n".join(lines) + "\n"
    (args.out / "generation.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How many packed training lengths a trial records, and the padding they cost, for each pack bucket:
the product's own batch stream (`trainables.loop.batch_stream`) over the study's training set
(`trainables.data.training_set`, the XTREME sample, the `random:<shape>` model's BPE tokenizer).

    python bench/pack_lengths.py --data ../shared/data/xtreme-sample

Each distinct packed length is one CUDA-graph recording per trial (`trainables/train_graphs.py`,
~1.5 s each at 3B in study runs 12–14); a wider bucket records fewer lengths and pads more tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="an XTREME folder (local: source)")
    p.add_argument("--shape", default="llama-3.2-3b", help="the random: model whose tokenizer cuts the text")
    p.add_argument("--per-task", type=int, default=1000, help="training examples per task (data.max_train_per_task)")
    p.add_argument("--steps", default="200,1000")
    p.add_argument("--buckets", default="128,192,256,384")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trainables.config import TrialConfig
    from trainables.data import training_pools, training_set
    from trainables.loop import batch_stream
    from trainables.models import load_tokenizer
    from trainables.random_model import ensure_random_model

    cfg = TrialConfig.model_validate({"model": {"name": f"random:{args.shape}"},
                                      "data": {"source": f"local:{args.data}", "train_split": "dev",
                                               "max_train_per_task": args.per_task}})
    ensure_random_model(cfg.model)
    tok = load_tokenizer(cfg.model)
    examples = training_set(cfg, tok, training_pools(cfg))
    print(f"{len(examples)} training examples, batch {cfg.train.batch_size}, seed {cfg.train.seed}")
    for steps in (int(s) for s in args.steps.split(",")):
        stream = batch_stream(examples, cfg.train.batch_size, cfg.train.seed, 0, 1)
        totals = [sum(len(e.student.input_ids) for e in next(stream)) for _ in range(steps)]
        for bucket in (int(b) for b in args.buckets.split(",")):
            widths = [max(bucket, -(-t // bucket) * bucket) for t in totals]
            print(f"  {steps:>5} steps, bucket {bucket:>4}: {len(set(widths)):>2} packed lengths, "
                  f"{sum(widths) / sum(totals):.3f}× the real tokens (mean {sum(totals) / steps:.0f} a batch)")


if __name__ == "__main__":
    main()

"""A sweep's data preparation on the CPU, each figure against its baseline in the same run:

1. the cache build's few-shot teacher encodings, one example at a time (`fewshot_encoding`, how
   the build tokenised before) against batched per task (`teacher_encodings`, what it does now);
2. a trial's data set-up: loading and tokenising the evaluation items and training examples
   (what every trial did) against reading them back from the experiment's prepared files
   (`trainables/prepared_data.py`, what every trial after the first does now).

    python bench/data_prep.py --data ../shared/data/xtreme-sample [--shape llama-test] [--repeats 3]

The model is the product's `random:<shape>` (its tokenizer: a byte-level BPE of the shape's
vocabulary learnt from the sample); sizes are study run 11's (≤ 1,000 train/task, dev 20 and
test 100 per pair, the dev split standing in for train and test as in bench/study_gpu.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="an XTREME folder (e.g. ../shared/data/xtreme-sample)")
    p.add_argument("--shape", default="llama-test", help="random:<shape> model whose tokenizer is used")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from bench.harness import timed
    from trainables.config import TrialConfig
    from trainables.data import fewshot_encoding, teacher_encodings, training_pools, training_set
    from trainables.evaluate import eval_items
    from trainables.models import load_tokenizer, prepare_model
    from trainables.prepared_data import prepared

    cpu = torch.device("cpu")  # harness.timed's device (nothing to synchronise)

    experiment = Path(tempfile.mkdtemp(prefix="lamtune-data-prep-"))
    cfg = TrialConfig.model_validate({
        "model": {"name": f"random:{args.shape}"}, "experiment_dir": str(experiment),
        "data": {"source": f"local:{args.data.resolve()}", "train_split": "dev", "max_train_per_task": 1000},
        "eval": {"test_split": "dev", "dev_per_pair": 20, "test_per_pair": 100}})
    prepare_model(cfg.model, sys.stdout)
    tok = load_tokenizer(cfg.model)
    pools = training_pools(cfg)
    examples = training_set(cfg, tok, pools)
    d = cfg.data

    def one_by_one() -> list[Any]:
        return [fewshot_encoding(tok, e.task, e.record, pools[e.task], d.shots[e.task], d.seed, e.index,
                                 d.max_teacher_len) for e in examples]

    def batched() -> list[Any]:
        return [enc for task in d.tasks
                for enc in teacher_encodings(cfg, tok, [e for e in examples if e.task == task], pools[task], True)]

    assert one_by_one() == batched(), "batched teacher encodings differ from one-by-one"
    base, new = timed(one_by_one, cpu, 0, args.repeats), timed(batched, cpu, 0, args.repeats)
    print(f"{os.cpu_count()} CPUs, tokenizer of random:{args.shape} ({len(tok)} tokens)")
    print(f"teacher encodings ({len(examples)} few-shot prompts): one by one {base:.2f}s, batched {new:.2f}s, "
          f"{base / new:.2f}x")

    def build() -> list[Any]:
        return [eval_items(cfg, tok, "dev", cfg.eval.dev_per_pair, False),
                eval_items(cfg, tok, cfg.eval.test_split, cfg.eval.test_per_pair, False), training_set(cfg, tok)]

    def read() -> list[Any]:
        return [prepared(cfg, tok, "eval-dev", lambda: eval_items(cfg, tok, "dev", cfg.eval.dev_per_pair, False)),
                prepared(cfg, tok, "eval-test",
                         lambda: eval_items(cfg, tok, cfg.eval.test_split, cfg.eval.test_per_pair, False)),
                prepared(cfg, tok, "train", lambda: training_set(cfg, tok))]

    assert read() == build(), "prepared files differ from a fresh build"  # the first read() stores them
    base, new = timed(build, cpu, 0, args.repeats), timed(read, cpu, 0, args.repeats)
    print(f"a trial's data set-up ({sum(len(x) for x in build())} items and examples): loaded and tokenised "
          f"{base:.2f}s, read from prepared files {new:.3f}s, {base / new:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

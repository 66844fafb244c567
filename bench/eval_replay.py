"""Evaluation decoding replayed on the CPU: the product's own stream planning and decoding loop
(`trainables.generation.plan_streams`, `_decode_stream`) over the study's real prompt lengths, with
a stand-in model in place of the network, so that decoding steps, prefill forwards and the
prefill's padded tokens can be counted without a GPU. Four ways, in the same run:

- one stream per length group, one prefill per admission (study run 9's code);
- length groups joined into streams, one prefill per admission (study run 10's code);
- joined streams, each admission prefilled in runs of similar lengths (study runs 11–14);
- the same, with each prefix that several prompts share prefilled once (the product now,
  `eval.share_prefixes`): the stand-in prompts keep the real prompts' shared prefixes.

Each way runs the dev items, the test items, and both in one pass (`final`: the last evaluation
of a trial, `eval.joint_final`).

Each way also counts the KV-cache cells its decoding steps read (rows × cache columns a step,
ended rows and unused columns included): what a step's attention loads.

The prompts are the study's evaluation items (`eval_items` on the XTREME sample, dev and test
subsets of the sizes the study bench uses) tokenised by the product's `random:<shape>` tokenizer
(a BPE of the shape's vocabulary learnt from the sample). The stand-in ends each answer after a
number of tokens drawn from an exponential law (mean --mean-answer, 22 in study run 9's trained
trials), within the task's token budget; rows per stream come from `batch_size_for` on the shape's
config and --eval-gb of evaluation memory. Counts, not times: what they cost on a GPU is measured
by `bench/study_gpu.py` (`gen/decode_steps`, `gen/prefill_tokens`).

    python bench/eval_replay.py --data ../shared/data/xtreme-sample --out /tmp/replay
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The stand-in model's vocabulary; every multiple of STRIDE is its end-of-sequence token.
VOCAB, STRIDE = 50_000, 1_000


def stand_in_lm() -> Any:
    """A causal LM stand-in whose greedy token follows its input token (id + 1)."""
    import torch
    from torch import nn

    class Successor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))
            self.config = type("Cfg", (), dict(vocab_size=VOCAB, num_hidden_layers=1, num_attention_heads=1,
                                               num_key_value_heads=1, hidden_size=4, intermediate_size=4))()

        def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep, cache=None):
            nxt = (input_ids[:, -1] + 1) % VOCAB
            logits = torch.zeros(input_ids.shape[0], 1, VOCAB)
            logits[torch.arange(len(nxt)), 0, nxt] = 1.0
            return type("Out", (), {"logits": logits})()

    return Successor()


def stand_in_prompts(lengths: Sequence[int], mean_answer: float, seed: int,
                     shared: Sequence[tuple[int, int]] | None = None) -> list[list[int]]:
    """Prompts of these lengths whose last token makes the stand-in end the answer after a drawn
    number of tokens (1 + an exponential draw of mean `mean_answer`, at most STRIDE - 1).

    With `shared` (each prompt's shared-prefix group, -1 for none, and its length): prompts of a
    group start with the same tokens for that length, then a token of their own, so that
    `shared_prefixes` finds the real prompts' groups again."""
    rnd = random.Random(seed)
    out = []
    for k, n in enumerate(lengths):
        answer = min(STRIDE - 1, 1 + int(rnd.expovariate(1 / mean_answer)))
        last = STRIDE * (k % (VOCAB // STRIDE - 2) + 1) - answer
        group, p = shared[k] if shared is not None else (-1, 0)
        own = n - p
        mark = [2 + k % (STRIDE - 3)] if own >= 2 else []  # never a multiple of STRIDE (an end token)
        out.append([STRIDE + 1 + group] * p + mark + [1] * (own - 1 - len(mark)) + [last])
    return out


def length_groups(lengths: Sequence[int], budgets: Sequence[int], rows_for: Any) -> list[tuple[list[int], int]]:
    """One stream per length group, largest budgets first within it (study run 9's plan)."""
    from trainables.generation import MIN_LENGTH_RATIO, length_runs

    groups = length_runs(range(len(lengths)), lengths.__getitem__, MIN_LENGTH_RATIO)
    return [(sorted(g, key=lambda i: -budgets[i]),
             max(1, min(len(g), rows_for(lengths[g[0]], max(budgets[i] for i in g))))) for g in groups]


def replay(lengths: list[int], budgets: list[int], args: argparse.Namespace,
           shared: Sequence[tuple[int, int]] | None = None) -> dict[str, dict[str, Any]]:
    """Decoding steps, prefills, prefill ÷ prompt tokens and KV-cache cells read, each way over these
    prompts (`shared`: their shared-prefix groups and lengths, see `stand_in_prompts`)."""
    import torch

    from trainables import generation
    from trainables.random_shapes import ARCHITECTURES

    shape = type("Shape", (), ARCHITECTURES[args.shape])()
    rows_for = lambda longest, most_new: generation.batch_size_for(  # noqa: E731
        shape, torch.bfloat16, longest, most_new, int(args.eval_gb * 2**30), args.max_batch)
    prompts = stand_in_prompts(lengths, args.mean_answer, args.seed, shared)
    cpu = torch.device("cpu")
    ends = torch.zeros(VOCAB, dtype=torch.bool)
    ends[::STRIDE] = True
    none = torch.zeros(VOCAB, dtype=torch.bool)
    ratio = generation.PREFILL_LENGTH_RATIO
    ways = {"one stream per length group (run 9)": (length_groups, 0.0, False),
            "joined streams, one prefill per admission (run 10)": (generation.plan_streams, 0.0, False),
            "joined streams, prefills of similar lengths (runs 11-14)": (generation.plan_streams, ratio, False),
            "the same, shared prefixes prefilled once (now)": (generation.plan_streams, ratio, True)}
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, (plan, prefill_ratio, share) in ways.items():
            generation.PREFILL_LENGTH_RATIO = prefill_ratio
            lm = stand_in_lm()
            session = generation.DecodeSession(lm, 0, generation.EndTables(ends, none, none), cpu, graphs=False)
            stats = generation.GenerationStats()
            prefixes = (generation.prefill_shared_prefixes(lm, prompts, cpu, stats, generation.SpanClock(cpu))
                        if share else [None] * len(prompts))
            streams = plan(lengths, budgets, rows_for)
            for stream, rows in streams:
                generation._decode_stream(lm, [prompts[i] for i in stream], [budgets[i] for i in stream], rows,
                                          session, stats, prefixes=[prefixes[i] for i in stream])
            out[name] = {"streams": [[len(s), r] for s, r in streams], "decode_steps": stats.decode_steps,
                         "prefills": stats.batches, "prompt_tokens": stats.prompt_tokens,
                         "prefill_tokens": stats.prefill_tokens, "prefix_tokens": stats.prefix_tokens,
                         "prefill_per_prompt_token": round(stats.prefill_tokens / stats.prompt_tokens, 2),
                         "kv_reads": stats.kv_reads}
    finally:
        generation.PREFILL_LENGTH_RATIO = ratio
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The study's dev and test evaluation items, each replayed every way."""
    from trainables.config import TrialConfig
    from trainables.evaluate import eval_items
    from trainables.random_model import random_tokenizer
    from trainables.random_shapes import ARCHITECTURES
    from trainables.shared_prefix import shared_prefixes
    from trainables.tasks.schema import DEFAULT_MAX_NEW_TOKENS

    cfg = TrialConfig.model_validate({"model": {"name": f"random:{args.shape}"},
                                      "data": {"source": f"local:{args.data}", "train_split": "dev"}})
    tokenizer = random_tokenizer(cfg.model, ARCHITECTURES[args.shape]["vocab_size"])
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
                              "shape": args.shape, "eval_gb": args.eval_gb, "mean_answer": args.mean_answer}
    # The study evaluates its test items on the sample's dev split (eval.test_split=dev); its last
    # evaluation decodes dev and test items in one pass (eval.joint_final).
    dev = eval_items(cfg, tokenizer, "dev", args.dev_per_pair, fewshot=False)
    test = eval_items(cfg, tokenizer, "dev", args.test_per_pair, fewshot=False)
    for split, items in (("dev", dev), ("test", test), ("final", dev + test)):
        lengths = [len(it.prompt_ids) for it in items]
        budgets = [DEFAULT_MAX_NEW_TOKENS[it.task] for it in items]
        groups = shared_prefixes([it.prompt_ids for it in items])
        shared = [(g, groups.prefix_len(i)) for i, g in enumerate(groups.group)]
        result[split] = {"items": len(items), "shared_prefix_lengths": groups.lengths,
                         "ways": replay(lengths, budgets, args, shared)}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the XTREME sample folder")
    p.add_argument("--out", type=Path, required=True, help="folder for eval_replay.json and .txt")
    p.add_argument("--shape", default="llama-3.2-3b", help="a random: architecture of the product")
    p.add_argument("--dev-per-pair", type=int, default=20)
    p.add_argument("--test-per-pair", type=int, default=100)
    p.add_argument("--eval-gb", type=float, default=20.0, help="evaluation memory that sizes the rows")
    p.add_argument("--max-batch", type=int, default=512, help="eval.batch_size")
    p.add_argument("--mean-answer", type=float, default=22.0, help="mean generated tokens per item")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "eval_replay.json").write_text(json.dumps(result, indent=1))
    lines = [f"evaluation replay {result['date']}: {args.shape} tokenizer, {args.eval_gb} GB, "
             f"answers of ~{args.mean_answer} tokens"]
    for split in ("dev", "test", "final"):
        lines.append(f"{split} ({result[split]['items']} items{', dev and test in one pass' if split == 'final' else ''})")
        for name, w in result[split]["ways"].items():
            lines.append(f"  {name:<56} steps {w['decode_steps']:>5}  prefills {w['prefills']:>4}  "
                         f"prefill/prompt tokens {w['prefill_per_prompt_token']:>5}  prefix tokens "
                         f"{w['prefix_tokens']:>7}  KV cells read "
                         f"{w['kv_reads'] / 1e6:>7.1f} M  streams {w['streams']}")
    text = "\n".join(lines) + "\n"
    (args.out / "eval_replay.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

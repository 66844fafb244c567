"""Pre-train the tiny default so that it learns in context on the synthetic tasks.

    python -m trainables.pretrain --out trainables/tiny_model --device cuda --seed 0

The corpus is drawn from the synthetic generator on the *train* split with generator seeds that
the sweep never uses (the sweep reads seed 0; dev and test are disjoint from every train split by
construction, see trainables/tasks/synthetic.py):

- k-shot episodes (k = 0..6, 0..4 for QA), rendered exactly as the product renders its prompts
  (trainables/prompts.py, plain text + EOS), in all six languages, demonstrations and query in
  one language. Each episode draws a random *labelling convention*: a permutation of the NLI
  label words, of yes/no, of the entity types PER/ORG/LOC and of the UPOS tags the grammar uses.
  The instruction names the allowed outputs but not the mapping, so only the demonstrations say
  which word means what: zero-shot the model can do no better than chance on the labels; shown k
  demonstrations it can copy the mapping from context (an induction-style lookup).
  The sweep's own data is the identity convention, one draw among many.
- parallel text: the same concept-level sentence spelled in two of the six languages, one after
  the other (word-for-word translations), so that English fine-tuning can transfer.
- plain text: running sentences in one language.

The model is a small LlamaForCausalLM trained with next-token loss on every token. The shipped
weights (trainables/tiny_model/model.safetensors) were made by the command above; the tokenizer
beside them is the one `trainables.models` used to train on first use (committed, so that ids match).
This module needs only torch, transformers and tokenizers (no pydantic), so it runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

from trainables.tasks.schema import LANGS, NLI_LABELS, TASKS, Record

#: Where the shipped default lives (package data).
SHIPPED_DIR = Path(__file__).resolve().parent / "tiny_model"
#: Shape of the shipped pre-trained default (TinyModelConfig's defaults must match it).
SHAPE = {"vocab_size": 2048, "hidden_size": 128, "num_layers": 4, "num_heads": 4,
         "intermediate_size": 256, "max_positions": 2048}
#: Generator seeds of the pre-training pools (the sweep uses seed 0) and of the held-out probe.
POOL_SEED, PROBE_SEED = 1001, 1002
ENTITY_TYPES = ("PER", "ORG", "LOC")
#: The UPOS tags the synthetic grammar emits (the convention permutes these among themselves).
POS_USED = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT")
MAX_SHOTS = {"nli": 6, "pa": 6, "qa": 4, "ner": 6, "pos": 6}
EVAL_SHOTS = {"nli": 5, "pa": 5, "qa": 3, "ner": 5, "pos": 5}


# --------------------------------------------------------------------------- conventions


def draw_convention(task: str, rng: random.Random) -> dict[Any, Any] | None:
    """A random relabelling of one task's outputs (None: the task has no label convention)."""
    if task == "nli":
        return dict(zip(NLI_LABELS, rng.sample(NLI_LABELS, 3)))
    if task == "pa":
        return {0: 0, 1: 1} if rng.random() < 0.5 else {0: 1, 1: 0}
    if task == "ner":
        return dict(zip(ENTITY_TYPES, rng.sample(ENTITY_TYPES, 3)))
    if task == "pos":
        return dict(zip(POS_USED, rng.sample(POS_USED, len(POS_USED))))
    return None


def relabel(task: str, r: Record, conv: dict[Any, Any] | None) -> Record:
    """The record with its labels renamed by the convention (identity when conv is None)."""
    if conv is None:
        return r
    r = dict(r)
    if task in ("nli", "pa"):
        r["label"] = conv[r["label"]]
    elif task == "ner":
        r["ner_tags"] = [t if t == "O" else t[:2] + conv[t[2:]] for t in r["ner_tags"]]
    elif task == "pos":
        r["pos_tags"] = [conv.get(t, t) for t in r["pos_tags"]]
    return r


# --------------------------------------------------------------------------- corpus


class _PlainText:
    chat_template = None


def episode(task: str, query: Record, shots: Sequence[Record]) -> tuple[str, str]:
    """(prompt, answer) exactly as the product renders a plain-text k-shot prompt."""
    from trainables.prompts import render

    rp = render(_PlainText(), task, query, shots)
    return rp.prompt, rp.answer


def pools(seed: int, n: int) -> dict[tuple[str, str], list[Record]]:
    """n train-split records per (task, language); record i is a translation across languages."""
    from trainables.tasks import synthetic

    return {(t, lang): synthetic.generate(t, lang, "train", n, seed=seed) for t in TASKS for lang in LANGS}


def _running_text(task: str, r: Record) -> str:
    if task == "nli":
        return r["premise"]
    if task == "pa":
        return r["sentence1"]
    if task == "qa":
        return r["context"]
    return " ".join(r["tokens"])


def sample_texts(pool: dict[tuple[str, str], list[Record]], rng: random.Random, n: int) -> list[tuple[str, str | None]]:
    """n training texts: (prompt, answer) for episodes, (text, None) for parallel and plain text."""
    out: list[tuple[str, str | None]] = []
    size = len(next(iter(pool.values())))
    for _ in range(n):
        u = rng.random()
        if u < 0.8:
            task, lang = rng.choice(TASKS), rng.choice(LANGS)
            k = 0 if rng.random() < 0.12 else rng.randint(1, MAX_SHOTS[task])
            recs = pool[(task, lang)]
            idx = rng.sample(range(size), k + 1)
            conv = draw_convention(task, rng)
            shots = [relabel(task, recs[i], conv) for i in idx[1:]]
            out.append(episode(task, relabel(task, recs[idx[0]], conv), shots))
        elif u < 0.93:  # parallel: the same sentences in two languages
            a, b = rng.sample(LANGS, 2)
            lines = []
            for _ in range(rng.randint(1, 3)):
                task, i = rng.choice(TASKS), rng.randrange(size)
                lines += [_running_text(task, pool[(task, a)][i]), _running_text(task, pool[(task, b)][i])]
            out.append(("\n".join(lines), None))
        else:
            lang = rng.choice(LANGS)
            lines = [_running_text(t, pool[(t, lang)][rng.randrange(size)]) for t in rng.choices(TASKS, k=4)]
            out.append(("\n".join(lines), None))
    return out


def encode_texts(tokenizer: Any, texts: list[tuple[str, str | None]], max_len: int) -> list[Any]:
    """Token ids (int16 arrays) as the product encodes them: prompt with BOS, answer apart, EOS; truncated."""
    import numpy as np

    prompts = tokenizer([p for p, _ in texts], add_special_tokens=True)["input_ids"]
    answers = tokenizer([a or "" for _, a in texts], add_special_tokens=False)["input_ids"]
    out = []
    for p, a in zip(prompts, answers):
        ids = list(p) + list(a) + [tokenizer.eos_token_id]
        out.append(np.asarray(ids[:max_len], dtype=np.int16))
    return out


def _worker(args: tuple[int, int, int, str, int]) -> list[Any]:
    chunk, n, seed, tok_dir, max_len = args
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    pool = _POOL
    rng = random.Random(f"pretrain/{seed}/{chunk}")
    return encode_texts(tok, sample_texts(pool, rng, n), max_len)


_POOL: dict = {}


def build_corpus(n_texts: int, seed: int, tok_dir: str, max_len: int, pool_size: int, procs: int) -> list[Any]:
    """The whole pre-training corpus (deterministic for a seed), built in `procs` processes."""
    global _POOL
    _POOL = pools(POOL_SEED + seed, pool_size)
    chunk = 2000
    jobs = [(c, min(chunk, n_texts - c * chunk), seed, tok_dir, max_len) for c in range(math.ceil(n_texts / chunk))]
    if procs <= 1:
        parts = [_worker(j) for j in jobs]
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(procs) as p:
            parts = p.map(_worker, jobs)
    return [ids for part in parts for ids in part]


# --------------------------------------------------------------------------- probe


def probe_sets(tokenizer: Any, n: int = 48) -> dict[tuple[str, int], list[tuple[list[int], int]]]:
    """Held-out canonical-convention episodes per (task, shots ∈ {0, k}): (ids, answer start)."""
    from trainables.alignment import encode

    pool = pools(PROBE_SEED, n + 8)
    out = {}
    for task in TASKS:
        for k in (0, EVAL_SHOTS[task]):
            items = []
            for lang in LANGS:
                recs = pool[(task, lang)]
                for i in range(n // len(LANGS)):
                    shots = [recs[(i + 1 + j) % len(recs)] for j in range(k)]
                    prompt, answer = episode(task, recs[i], shots)
                    enc = encode(tokenizer, prompt, answer, True)
                    items.append((list(enc.input_ids), enc.answer_start))
            out[(task, k)] = items
    return out


def probe(model: Any, sets: dict, device: Any) -> dict[str, float]:
    """Teacher-forced answer-token accuracy (%) per task, zero-shot and k-shot."""
    import torch

    model.eval()
    res = {}
    with torch.no_grad():
        for (task, k), items in sets.items():
            hit = tot = 0
            for ids, start in items:
                x = torch.tensor([ids], device=device)
                logits = model(input_ids=x).logits[0]
                pred = logits[start - 1:len(ids) - 1].argmax(-1)
                gold = x[0, start:]
                hit += int((pred == gold).sum())
                tot += gold.numel()
            res[f"{task}/k{k}"] = 100.0 * hit / tot
    model.train()
    return res


# --------------------------------------------------------------------------- model + training


def build_model(tokenizer: Any, shape: dict[str, int], seed: int) -> Any:
    """A randomly initialised LlamaForCausalLM of the given shape (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
        num_key_value_heads=shape["num_heads"], max_position_embeddings=shape["max_positions"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Pre-train and save the model (and the tokenizer) to args.out; returns the run's summary."""
    import torch
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tok = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    t0 = time.time()
    corpus = build_corpus(args.texts, args.seed, args.tokenizer, args.max_len, args.pool_size, args.procs)
    n_tok = sum(map(len, corpus))
    print(f"corpus: {len(corpus)} texts, {n_tok / 1e6:.1f}M tokens, {time.time() - t0:.0f}s", flush=True)
    sets = probe_sets(tok)
    model = build_model(tok, SHAPE, args.seed).to(device)
    print(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), fused=device.type == "cuda")

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        if args.max_seconds:  # the cosine ends at whichever comes first, the steps or the time
            p = min(1.0, max(p, (time.time() - t1) / args.max_seconds))
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    rng = random.Random(args.seed)
    order = list(range(len(corpus)))
    # Length-bucketed batches: sort by length inside windows of 50 batches, then shuffle the batches.
    def batches():
        while True:
            rng.shuffle(order)
            w = args.batch * 50
            groups = []
            for s in range(0, len(order), w):
                win = sorted(order[s:s + w], key=lambda i: len(corpus[i]))
                groups += [win[j:j + args.batch] for j in range(0, len(win), args.batch)]
            rng.shuffle(groups)
            yield from groups

    pad = tok.pad_token_id
    history = []
    model.train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    it = batches()
    t1 = time.time()
    seen = 0
    for step in range(args.steps):
        if args.max_seconds and time.time() - t1 > args.max_seconds:
            print(f"stopping at step {step}: --max-seconds {args.max_seconds} reached", flush=True)
            break
        idx = next(it)
        L = max(len(corpus[i]) for i in idx)
        x = torch.full((len(idx), L), pad, dtype=torch.long)
        m = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            ids = corpus[i]
            x[r, :len(ids)] = torch.from_numpy(ids.astype("int64"))
            m[r, :len(ids)] = 1
        x, m = x.to(device, non_blocking=True), m.to(device, non_blocking=True)
        labels = x.masked_fill(m == 0, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with autocast:
            loss = model(input_ids=x, attention_mask=m, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += int(m.sum())
        if step % args.log_every == 0 or step == args.steps - 1:
            rec = {"step": step, "loss": float(loss), "tokens_M": seen / 1e6, "s": time.time() - t1}
            if step % (args.log_every * 5) == 0 or step == args.steps - 1:
                rec.update(probe(model, sets, device))
            history.append(rec)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rec.items()}), flush=True)
    final = {"step": step, "loss": float(loss), "tokens_M": seen / 1e6, "s": time.time() - t1, **probe(model, sets, device)}
    history.append(final)
    print("final", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in final.items()}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu").float().save_pretrained(out, safe_serialization=True)
    if Path(args.tokenizer).resolve() != out.resolve():
        tok.save_pretrained(out)
    summary = {"command": "python -m trainables.pretrain " + " ".join(args.argv), "seed": args.seed,
               "shape": SHAPE, "corpus_texts": len(corpus), "corpus_tokens": n_tok, "steps": step + 1,
               "train_seconds": time.time() - t1, "final": final, "history": history}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m trainables.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(SHIPPED_DIR))
    p.add_argument("--tokenizer", default=str(SHIPPED_DIR), help="folder with the tokenizer (tokenizer.json)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--texts", type=int, default=400_000)
    p.add_argument("--pool-size", type=int, default=4000)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--max-len", type=int, default=768)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--max-seconds", type=float, default=0, help="stop (and save) after this much training time")
    args = p.parse_args(argv)
    args.argv = argv
    print(json.dumps(train(args), indent=1))


if __name__ == "__main__":
    main()

"""Synthetic experiments for analysis tests: per-example predictions drawn at random, and the
results rows a real sweep would report for them (scored with trainables.tasks.metrics.metric)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trainables.tasks.metrics import metric
from trainables.tasks.schema import NER_TAGS, NLI_LABELS, UPOS_TAGS
from analysis.collect import COLUMNS

#: (task, lang) pairs of the synthetic experiment (languages differ per task, as in XTREME).
PAIRS = [("nli", "en"), ("nli", "hi"), ("nli", "de"), ("qa", "en"), ("qa", "de"),
         ("ner", "en"), ("ner", "hi"), ("pos", "en"), ("pos", "hi")]
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]


@dataclass(frozen=True)
class Trial:
    trial_id: str
    label: str
    condition: str
    lam: float
    seed: int
    skill: float  # chance that a prediction is right

    @property
    def policy(self) -> str:
        return "fixed" if self.condition in ("distill", "control") else ""

    @property
    def teacher_mode(self) -> str:
        return {"distill": "fewshot", "control": "zeroshot"}.get(self.condition, "")


def trials(seeds: tuple[int, ...] = (1, 2), with_sft: bool = True, with_control: bool = True) -> list[Trial]:
    """sft, control λ=0.05, distill λ=0.05, distill λ=0.5 (each per seed), with different skills."""
    spec = [("sft", "sft", 0.0, 0.5), ("control λ=0.05", "control", 0.05, 0.4),
            ("distill λ=0.05", "distill", 0.05, 0.75), ("distill λ=0.5", "distill", 0.5, 0.55)]
    out = []
    for i, (label, cond, lam, skill) in enumerate(spec):
        if (cond == "sft" and not with_sft) or (cond == "control" and not with_control):
            continue
        for seed in seeds:
            out.append(Trial(f"t{i}_{seed}", label, cond, lam, seed, skill + 0.03 * (seed - 1)))
    return out


def _example(task: str, rng: random.Random) -> object:
    if task == "nli":
        return rng.choice(NLI_LABELS)
    if task == "qa":
        return [" ".join(rng.sample(WORDS, rng.randint(1, 3)))]
    n = rng.randint(3, 8)
    if task == "pos":
        return [rng.choice(UPOS_TAGS) for _ in range(n)]
    tags, i = [], 0
    while i < n:  # valid IOB2: entities of 1–2 tokens between Os
        if rng.random() < 0.4:
            kind = rng.choice(["PER", "ORG", "LOC"])
            tags.append(f"B-{kind}")
            if i + 1 < n and rng.random() < 0.5:
                tags.append(f"I-{kind}")
                i += 1
        else:
            tags.append("O")
        i += 1
    return tags[:n]


def _predict(task: str, ref: object, skill: float, rng: random.Random) -> object:
    if rng.random() < skill:
        return ref[0] if task == "qa" else ref
    if task == "nli":
        return rng.choice([*NLI_LABELS, None])
    if task == "qa":
        return rng.choice([ref[0].split()[0], "zeta eta", ""])
    tags = list(ref)
    pool = NER_TAGS if task == "ner" else UPOS_TAGS
    for j in range(len(tags)):
        if rng.random() < 0.4:
            tags[j] = rng.choice(pool)
    if rng.random() < 0.2:
        tags = tags[: rng.randint(0, len(tags))]  # too short: padded when scored
    return None if rng.random() < 0.05 else tags


def references(n: int = 24, seed: int = 0) -> dict[tuple[str, str], list[object]]:
    """Gold answers per (task, lang), shared by every trial."""
    rng = random.Random(seed)
    return {(task, lang): [_example(task, rng) for _ in range(n)] for task, lang in PAIRS}


def predictions(ts: list[Trial], refs: dict[tuple[str, str], list[object]]) -> pd.DataFrame:
    """One row per trial × example, in load_predictions' columns (minus the joined trial columns)."""
    rows = []
    for t in ts:
        rng = random.Random(f"{t.trial_id}")
        for (task, lang), golds in refs.items():
            for k, ref in enumerate(golds):
                pred = _predict(task, ref, t.skill, rng)
                rows.append({"trial_id": t.trial_id, "split": "test", "task": task, "lang": lang,
                             "example_id": f"{task}-{lang}-{k:03d}", "output": str(pred),
                             "prediction": json.dumps(pred), "reference": json.dumps(ref),
                             "parse_failed": pred is None})
    return pd.DataFrame(rows)


def _base(t: Trial) -> dict:
    return {"trial_id": t.trial_id, "label": t.label, "condition": t.condition, "policy": t.policy,
            "policy_params": json.dumps({"lam": t.lam} if t.policy else {}), "lam": t.lam,
            "teacher_mode": t.teacher_mode, "seed": t.seed, "model": "tiny", "finetune": "full", "kd_loss": "fkl"}


def results(ts: list[Trial], preds: pd.DataFrame, steps: tuple[int, ...] = (3, 6)) -> pd.DataFrame:
    """results.parquet rows: final test scores from `preds` (every metric) and training diagnostics."""
    rows = []
    for t in ts:
        base = _base(t)
        last = steps[-1]
        mine = preds[preds["trial_id"] == t.trial_id]
        for (task, lang), g in mine.groupby(["task", "lang"], sort=False):
            scores = metric(task, lang, [json.loads(p) for p in g["prediction"]], [json.loads(r) for r in g["reference"]])
            for name, value in scores.items():
                rows.append({**base, "split": "test", "task": task, "lang": lang, "metric": name, "value": value,
                             "step": last, "eval_index": len(steps), "final": True})
        for i, step in enumerate(steps, start=1):
            final = step == last
            train = {"ce": 2.0 / i, "kd": 0.0 if t.condition == "sft" else 0.5 / i}
            for name, value in train.items():
                rows.append({**base, "split": "train", "task": "all", "lang": "all", "metric": name, "value": value,
                             "step": step, "eval_index": i, "final": final})
            for j, task in enumerate(["nli", "qa", "ner", "pos"]):
                diag = {"student_ce": 3.0 - i + 0.1 * j + 0.01 * t.seed}
                if t.condition != "sft":
                    diag["teacher_ce"] = 2.0 + 0.1 * j
                    diag["lambda"] = t.lam * (1 + 0.1 * i * (t.seed - 1))
                    if i >= 2:  # student below teacher from the second report on
                        diag["crossover_step"] = float(steps[0] + j)
                for name, value in diag.items():
                    rows.append({**base, "split": "train", "task": task, "lang": "all", "metric": name,
                                 "value": value, "step": step, "eval_index": i, "final": final})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_experiment(root: Path, name: str = "synth", seeds: tuple[int, ...] = (1, 2), with_sft: bool = True,
                     with_control: bool = True, with_predictions: bool = True) -> Path:
    """A lamtune-shaped experiment directory: results.parquet and predictions/<trial>/test.parquet."""
    exp = root / name
    exp.mkdir(parents=True)
    ts = trials(seeds, with_sft, with_control)
    preds = predictions(ts, references())
    results(ts, preds).to_parquet(exp / "results.parquet", index=False)
    if with_predictions:
        for trial_id, g in preds.groupby("trial_id"):
            (exp / "predictions" / trial_id).mkdir(parents=True)
            g.drop(columns=["trial_id", "split"]).to_parquet(exp / "predictions" / trial_id / "test.parquet", index=False)
    return exp

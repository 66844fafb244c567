"""Done-when for real data: a Ray Tune sweep on the shared XTREME sample (read in place) with the
tiny model runs base, fewshot, sft and distill over every task × language pair XTREME has, and
the Δ-vs-SFT table has every cell — PAWS-X Hindi and MLQA French are absent, not zero.

The sample has English training sets only for PAN-X and UDPOS and labels for few test files, so
the sweep trains on the English dev split (data.train_split=dev) and evaluates on dev
(eval.test_split=dev); English dev scores are then in-sample (docs/data.md). NLI and PA are
scored (eval.mode=score), so even the untrained tiny model gives them non-trivial numbers.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from tests.conftest import XTREME_SAMPLE
from trainables.evaluate import skipped_pairs
from trainables.tasks.schema import HEADLINE_METRIC, TASKS, XTREME_LANGS
from tuner.loading import load_spec
from tuner.sweep import run_sweep

OVERRIDES = [
    f"data.source=local:{XTREME_SAMPLE}", "data.train_split=dev", "data.max_train_per_task=4",
    "data.max_student_len=2048", "data.max_teacher_len=2048",
    "train.steps=2", "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
    "eval.test_split=dev", "eval.dev_per_pair=2", "eval.test_per_pair=2",
    "eval.max_new_tokens={nli: 2, pa: 2, qa: 4, ner: 4, pos: 4}",
    "eval.mode=score", "teacher.top_k=16", "search.scheduler=none",
    "variants=[{condition: base}, {condition: fewshot}, {condition: sft}]",
    "distill_lambdas=[0.5]", "add_baselines=false",
]
PAIRS = {(t, lang) for t in TASKS for lang in XTREME_LANGS[t]}  # 28 = 6 + 5 + 5 + 6 + 6


@pytest.mark.e2e
@pytest.mark.skipif(not XTREME_SAMPLE.is_dir(), reason="shared XTREME sample not present")
def test_sweep_on_the_xtreme_sample_fills_the_table(ray_session, tmp_path):
    spec = load_spec("smoke", OVERRIDES, name="xtreme-sample")
    assert [v.label for v in spec.expanded_variants()] == ["base", "fewshot", "sft", "distill λ=0.5"]
    trial = spec.trial_configs(str(tmp_path), {})[0]
    assert skipped_pairs(trial) == [("pa", "hi", "PAWS-X has no Hindi"), ("qa", "fr", "MLQA has no French")]

    outcome = run_sweep(spec, tmp_path, out=io.StringIO())
    assert outcome.errors == {}
    df = pd.read_parquet(outcome.results_path)
    final = df[(df["split"] == "test") & df["final"] & (df["lang"] != "avg")]
    head = final[final["metric"] == final["task"].map(HEADLINE_METRIC)]
    for label in ("base", "fewshot", "sft", "distill λ=0.5"):
        got = set(map(tuple, head[head["label"] == label][["task", "lang"]].to_numpy()))
        assert got == PAIRS, label
    # Missing pairs report nothing at all (no zero rows), in any split or metric.
    assert df[(df["task"] == "pa") & (df["lang"] == "hi")].empty
    assert df[(df["task"] == "qa") & (df["lang"] == "fr")].empty
    assert head["value"].between(0, 100).all()
    # Scored classification never fails to parse.
    scored = final[final["task"].isin(["nli", "pa"]) & (final["metric"] == "parse_fail")]
    assert len(scored) == 4 * 11 and (scored["value"] == 0).all()
    # Distillation ran on the few-shot teacher: KD is positive, SFT's is zero.
    kd = df[(df["split"] == "train") & (df["metric"] == "kd")]
    assert (kd[kd["label"] == "distill λ=0.5"]["value"] > 0).all() and (kd[kd["label"] == "sft"]["value"] == 0).all()

    # The Δ table: 5 task rows + Avg, every score and Δ cell filled.
    rows = outcome.table_markdown.splitlines()[2:]  # below the header and its rule
    assert len(rows) == len(TASKS) + 1, outcome.table_markdown
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 4 + 3 and "–" not in cells and "" not in cells, line
    for trial_id in df["trial_id"].unique():
        preds = pd.read_parquet(tmp_path / "xtreme-sample" / "predictions" / trial_id / "test.parquet")
        assert set(map(tuple, preds[["task", "lang"]].drop_duplicates().to_numpy())) == PAIRS
        assert len(preds) == 2 * len(PAIRS)

"""Point-estimate tables, checked cell by cell against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import tables as tb
from analysis.errors import AnalysisError
from analysis.order import label_ranks


#: The rank of each SCORES label, as headline_scores gives it from the trial columns.
RANKS = {"sft": 0, "control λ=0.05": 1, "distill λ=0.05": 2, "distill λ=0.5": 3}


def _scores(rows, ranks=RANKS):
    df = pd.DataFrame(rows, columns=["condition", "task", "lang", "score"])
    return df.assign(order=df["condition"].map(ranks))


SCORES = _scores([
    ("sft", "nli", "en", 60.0), ("sft", "nli", "hi", 40.0), ("sft", "ner", "en", 30.0),
    ("distill λ=0.05", "nli", "en", 70.0), ("distill λ=0.05", "nli", "hi", 56.0), ("distill λ=0.05", "ner", "en", 35.0),
    ("distill λ=0.5", "nli", "en", 62.0), ("distill λ=0.5", "ner", "en", 20.0), ("distill λ=0.5", "ner", "hi", 24.0),
    ("control λ=0.05", "nli", "en", 50.0), ("control λ=0.05", "nli", "hi", 46.0), ("control λ=0.05", "ner", "en", 25.0),
])


def test_delta_vs_sft_means_over_available_languages_then_tasks():
    t = tb.delta_vs_sft(SCORES)
    assert list(t.index) == ["nli", "ner", "Avg"]
    assert list(t.columns) == ["sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5",
                               "Δ control λ=0.05", "Δ distill λ=0.05", "Δ distill λ=0.5"]
    assert t.at["nli", "sft"] == 50.0 and t.at["nli", "distill λ=0.05"] == 63.0
    assert t.at["nli", "distill λ=0.5"] == 62.0  # only en available
    assert t.at["ner", "distill λ=0.5"] == 22.0
    assert t.at["Avg", "sft"] == (50.0 + 30.0) / 2
    assert t.at["Avg", "distill λ=0.5"] == (62.0 + 22.0) / 2
    assert t.at["Avg", "Δ distill λ=0.05"] == pytest.approx((63.0 + 35.0) / 2 - 40.0)
    assert t.at["ner", "Δ control λ=0.05"] == -5.0


def test_delta_vs_sft_errors_are_one_line_value_errors():
    with pytest.raises(tb.TableError, match="no 'sft' baseline") as err:
        tb.delta_vs_sft(SCORES[SCORES["condition"] != "sft"])
    assert isinstance(err.value, AnalysisError) and isinstance(err.value, ValueError)
    with pytest.raises(tb.TableError, match="lack column"):
        tb.delta_vs_sft(SCORES.drop(columns="lang"))
    with pytest.raises(tb.TableError, match="no final scores"):
        tb.delta_vs_sft(SCORES.iloc[:0])


def test_headline_scores_takes_final_headline_metric_and_averages_seeds(results):
    s = tb.headline_scores(results)
    final = results[(results["split"] == "test") & results["final"]]
    direct = final[(final["label"] == "sft") & (final["task"] == "ner") & (final["lang"] == "en") & (final["metric"] == "f1")]
    got = s[(s["condition"] == "sft") & (s["task"] == "ner") & (s["lang"] == "en")]["score"]
    assert got.item() == pytest.approx(direct["value"].mean()) and len(direct) == 2
    by_seed = tb.headline_scores(results, by_seed=True)
    assert set(by_seed["seed"]) == {1, 2} and len(by_seed) == 2 * len(s)
    # POS's headline is token accuracy, not its seqeval F1.
    acc = final[(final["label"] == "sft") & (final["task"] == "pos") & (final["lang"] == "en") & (final["metric"] == "acc")]
    got = s[(s["condition"] == "sft") & (s["task"] == "pos") & (s["lang"] == "en")]["score"]
    assert got.item() == pytest.approx(acc["value"].mean())


def test_per_language_rows_conditions_columns_languages():
    t = tb.per_language(SCORES, "nli")
    assert list(t.columns) == ["EN", "HI", "Avg", "Δ vs sft"]
    assert list(t.index) == ["sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5"]
    assert t.at["distill λ=0.05", "Avg"] == 63.0 and t.at["distill λ=0.05", "Δ vs sft"] == 13.0
    assert math.isnan(t.at["sft", "Δ vs sft"]) and math.isnan(t.at["distill λ=0.5", "HI"])
    assert "Δ vs sft" not in tb.per_language(SCORES, "nli", baseline=None).columns
    with pytest.raises(tb.TableError, match="no pos scores"):
        tb.per_language(SCORES, "pos")


def _info(rows):
    cols = ["label", "condition", "policy", "policy_params", "lam", "teacher_mode"]
    return pd.DataFrame(rows, columns=cols)


def test_control_pairs_prefer_the_same_lambda_else_the_only_or_nearest_control():
    one = _info([("distill λ=0.05", "distill", "fixed", '{"lam": 0.05}', 0.05, "fewshot"),
                 ("distill λ=0.5", "distill", "fixed", '{"lam": 0.5}', 0.5, "fewshot"),
                 ("control λ=0.05", "control", "fixed", '{"lam": 0.05}', 0.05, "zeroshot")])
    assert tb.control_pairs(one) == {"distill λ=0.05": "control λ=0.05", "distill λ=0.5": "control λ=0.05"}
    two = pd.concat([one, _info([("control λ=0.2", "control", "fixed", '{"lam": 0.2}', 0.2, "zeroshot"),
                                 ("control λ=0.5", "control", "fixed", '{"lam": 0.5}', 0.5, "zeroshot")])])
    assert tb.control_pairs(two)["distill λ=0.5"] == "control λ=0.5"
    three = two[two["label"] != "control λ=0.5"]
    assert tb.control_pairs(three)["distill λ=0.5"] == "control λ=0.2"  # nearest in log λ
    with pytest.raises(tb.TableError, match="needs both distill and control"):
        tb.control_pairs(one[one["condition"] != "control"])


def test_dist_ctrl_gap_is_the_difference_of_task_scores():
    pairs = {"distill λ=0.05": "control λ=0.05", "distill λ=0.5": "control λ=0.05", "distill λ=9": "control λ=0.05"}
    t = tb.dist_ctrl_gap(SCORES, pairs)
    assert list(t.columns) == ["distill λ=0.05 − control λ=0.05", "distill λ=0.5 − control λ=0.05"]
    assert t.at["nli", "distill λ=0.05 − control λ=0.05"] == 63.0 - 48.0
    assert t.at["Avg", "distill λ=0.5 − control λ=0.05"] == pytest.approx((62 + 22) / 2 - (48 + 25) / 2)


def test_best_lambda_takes_the_argmax_per_task_and_avg():
    lams = {"distill λ=0.05": 0.05, "distill λ=0.5": 0.5}
    t = tb.best_lambda(SCORES, lams)
    assert list(t.columns) == ["λ=0.05", "λ=0.5", "best λ", "sft", "Δ best vs sft"]
    assert t.at["nli", "best λ"] == 0.05 and t.at["Avg", "best λ"] == 0.05
    assert t.at["ner", "best λ"] == 0.05  # 35 vs 22
    assert t.at["ner", "Δ best vs sft"] == 5.0
    assert tb.best_labels(t, lams).tolist() == ["distill λ=0.05"] * 3
    with pytest.raises(tb.TableError, match="no fixed-λ distill"):
        tb.best_lambda(SCORES, {})


def test_fixed_lambdas_and_label_order(results):
    assert tb.fixed_lambdas(results) == {"distill λ=0.05": 0.05, "distill λ=0.5": 0.5}
    ranks = label_ranks(results)
    assert ranks.to_dict() == {"sft": 0, "control λ=0.05": 1, "distill λ=0.05": 2, "distill λ=0.5": 3}
    assert tb.ordered(["distill λ=0.5", "x", "sft", "distill λ=0.05", "control λ=0.05"], ranks) == [
        "sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5", "x"]  # unranked last


def test_scores_without_an_order_column_are_ordered_by_name():
    t = tb.delta_vs_sft(SCORES.drop(columns="order"))
    assert list(t.columns)[:4] == ["control λ=0.05", "distill λ=0.05", "distill λ=0.5", "sft"]


#: Labels whose text contradicts their trial columns: a label's λ or condition word is never read.
MISLEADING = {"sft": "zz baseline", "control λ=0.05": "distill λ=9", "distill λ=0.05": "λ=7 big",
              "distill λ=0.5": "distill λ=0.01"}


def test_the_order_comes_from_the_trial_columns_not_the_label_text(results):
    r = results.assign(label=results["label"].map(MISLEADING))
    # condition sft < control < distill, then lam 0.05 < 0.5: the labels say the opposite.
    want = ["zz baseline", "distill λ=9", "λ=7 big", "distill λ=0.01"]
    assert label_ranks(r).index.tolist() == want
    scores = tb.headline_scores(r)
    t = tb.delta_vs_sft(scores, baseline="zz baseline")
    assert list(t.columns) == [*want, *(f"Δ {c}" for c in want[1:])]
    same = tb.delta_vs_sft(tb.headline_scores(results))  # the same numbers under the usual labels
    np.testing.assert_allclose(t.to_numpy(), same.to_numpy())
    assert list(tb.per_language(scores, "nli", baseline="zz baseline").index) == want
    assert list(tb.learned_lambda(r).index) == want[1:]
    assert list(dict.fromkeys(tb.ce_crossover(r).index.get_level_values(0))) == want[1:]
    assert tb.control_pairs(r) == {"λ=7 big": "distill λ=9", "distill λ=0.01": "distill λ=9"}
    with pytest.raises(tb.TableError, match=r"among the conditions \['distill λ=9', 'λ=7 big', 'distill λ=0.01'\]"):
        tb.delta_vs_sft(scores[scores["condition"] != "zz baseline"], baseline="zz baseline")


def test_custom_labels_and_experiment_prefixes_sort_by_condition_then_lambda(results):
    custom = {"sft": "a-student", "control λ=0.05": "b-zeroshot-teacher", "distill λ=0.05": "c-small",
              "distill λ=0.5": "c-big"}
    r = results.assign(label="exp/" + results["label"].map(custom))
    assert label_ranks(r).index.tolist() == ["exp/a-student", "exp/b-zeroshot-teacher", "exp/c-small", "exp/c-big"]
    # A non-fixed policy (λ NaN) follows the fixed ones; the same condition and λ: the label breaks the tie.
    nan = results.assign(lam=results["lam"].where(results["label"] != "distill λ=0.05", float("nan")))
    assert label_ranks(nan).index.tolist() == ["sft", "control λ=0.05", "distill λ=0.5", "distill λ=0.05"]
    both = results.assign(lam=results["lam"].where(results["condition"] != "distill", 0.1))
    assert label_ranks(both).index.tolist() == ["sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5"]
    base = results.assign(condition=results["condition"].replace({"sft": "base"}), label=results["label"].replace(
        {"sft": "zero-shot"}))
    assert label_ranks(base).index[0] == "zero-shot"


def test_learned_lambda_is_the_last_report_averaged_over_seeds(results):
    t = tb.learned_lambda(results)
    assert list(t.index) == ["control λ=0.05", "distill λ=0.05", "distill λ=0.5"]
    assert list(t.columns) == ["nli", "qa", "ner", "pos"]
    # synth: λ = lam·(1 + 0.1·report·(seed − 1)); last report = 2 → seeds 1, 2 give lam and 1.2·lam.
    assert t.at["distill λ=0.5", "ner"] == pytest.approx((0.5 + 0.6) / 2)
    std = tb.learned_lambda(results, agg="std")
    assert std.at["distill λ=0.5", "ner"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    with pytest.raises(tb.TableError, match="no trial reported λ"):
        tb.learned_lambda(results[results["metric"] != "lambda"])


def test_ce_crossover_reads_teacher_and_student_ce(results):
    t = tb.ce_crossover(results)
    assert t.index.names == ["condition", "task"] and ("sft", "nli") not in t.index
    row = t.loc[("distill λ=0.5", "ner")]
    # synth: teacher 2.0 + 0.1·j, student 3 − report + 0.1·j + 0.01·seed; crossover = 3 + j (j: ner = 2).
    assert row["teacher CE (avg)"] == pytest.approx(2.2)
    assert row["student CE (first)"] == pytest.approx(2.0 + 0.2 + 0.015)
    assert row["student CE (last)"] == pytest.approx(1.0 + 0.2 + 0.015)
    assert row["crossover step"] == 5.0
    never = results[results["metric"] != "crossover_step"]
    assert tb.ce_crossover(never)["crossover step"].isna().all()
    with pytest.raises(tb.TableError, match="no teacher-vs-student CE"):
        tb.ce_crossover(results[results["metric"] != "teacher_ce"])

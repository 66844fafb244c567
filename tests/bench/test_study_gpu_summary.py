"""The study benchmark's per-trial figures, read from the keys a trial reports."""

from __future__ import annotations

import pytest


def test_summarise_trial_reads_the_reported_keys():
    from bench.study_gpu import summarise_trial

    rows = [
        {"step": 2, "train/tokens_seen": 100, "time/train_s": 2.0, "time/eval_s": 1.0, "time_total_s": 5.0,
         "time/setup_s": 1.25, "time/first_step_s": 0.75, "time/worker_start_s": 9.04, "time/worker_process_s": 3.96, "time/setup_model_s": 0.61,
         "gen/tokens": 40, "gen/examples": 8, "gen/seconds": 0.5, "mem/peak_gpu_gb": 3.0, "final": False},
        {"step": 4, "train/tokens_seen": 250, "time/train_s": 3.0, "time/eval_s": 1.5, "time_total_s": 11.0,
         "gen/tokens": 60, "gen/examples": 8, "gen/seconds": 0.5, "test/gen/tokens": 100, "test/gen/examples": 12,
         "test/gen/seconds": 1.0, "mem/peak_gpu_gb": 4.5, "test/avg": 37.5, "final": True},
    ]
    s = summarise_trial(rows)
    assert s["status"] == "finished" and s["steps"] == 4 and s["wall_s"] == 11.0
    assert s["train_tokens"] == 250 and s["train_s"] == 5.0 and s["train_tok_per_s"] == 50
    assert s["eval_s"] == 2.5 and s["startup_s"] == 2.0  # 5 − 2 − 1
    assert s["setup_s"] == 1.2 and s["first_step_s"] == 0.8  # the first report's, rounded
    assert s["worker_start_s"] == 9.0 and s["worker_process_s"] == 4.0 and s["setup_model_s"] == 0.6 and "setup_data_s" not in s  # absent: not shown
    assert s["gen_tokens"] == 200 and s["gen_examples"] == 28 and s["gen_tok_per_s"] == 100
    assert s["gen_examples_per_s"] == pytest.approx(14.0)
    assert s["peak_gpu_gb"] == 4.5 and s["test_avg"] == 37.5
    # After the first evaluation: 150 tokens in 3 s over steps 3-4; the first interval took 2 s.
    assert s["train_tok_per_s_after_first_eval"] == 50 and s["steady_step_s"] == 1.5 and s["first_interval_s"] == 2.0
    assert summarise_trial([]) == {"status": "no report"}


def test_summarise_trial_counts_student_tokens_when_reported():
    """Training speed is the student's forward tokens (prompt + answer) when the trial reports them."""
    from bench.study_gpu import summarise_trial

    rows = [{"step": 2, "train/tokens_seen": 100, "train/student_tokens_seen": 900, "time/train_s": 3.0,
             "time_total_s": 4.0, "final": True}]
    s = summarise_trial(rows)
    assert s["train_tokens"] == 900 and s["train_tok_per_s"] == 300


def test_cache_figures_read_the_builds_phases_and_per_task_forwards(tmp_path):
    import json

    from bench.study_gpu import H200_BF16_PEAK, cache_figures

    stats = {"seconds": 20.0, "teacher_tokens": 3_000_000, "answer_tokens": 60_000, "data_s": 1.0, "load_s": 2.0,
             "encode_s": 3.0, "forward_s": 12.0, "write_s": 0.5, "compiled": False,
             "forward_by_task_s": {"nli": 10.0, "pos": 2.0, "pa": 0.0},
             "teacher_tokens_by_task": {"nli": 2_000_000, "pos": 1_000_000, "pa": 0}}
    (tmp_path / "fewshot-x").mkdir()
    (tmp_path / "fewshot-x" / "manifest.json").write_text(json.dumps({"stats": stats}))
    (row,) = cache_figures(tmp_path, n_params=3_000_000_000)
    assert row["teacher_tok_per_s"] == 150_000 and row["forward_tok_per_s"] == 250_000
    assert row["phases_s"] == {"data_s": 1.0, "load_s": 2.0, "encode_s": 3.0, "forward_s": 12.0, "write_s": 0.5}
    assert row["compiled"] is False and set(row["forward_by_task"]) == {"nli", "pos"}  # a task with no forward is left out
    nli = row["forward_by_task"]["nli"]
    assert nli["tok_per_s"] == 200_000
    assert nli["pct_of_bf16_peak"] == pytest.approx(round(100 * 2 * 3e9 * 200_000 / H200_BF16_PEAK, 1))


def test_reports_come_from_the_trials_own_logs_with_tunes_clock(tmp_path):
    """A report Tune has not copied yet (the sweep stopped first) still counts; Tune's time fields
    join the report of the same evaluation; a trial that never reported has none."""
    import json

    from bench.study_gpu import summarise_trial, trial_reports
    from trainables.trial_log import append_report, write_config

    def tune_dir(trial_id, label, rows):
        d = tmp_path / f"trial_{trial_id}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps({"trial": {"variant": {"label": label}}}))
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))

    report = {"step": 2, "eval_index": 0, "train/tokens_seen": 100, "time/train_s": 2.0, "time/eval_s": 1.0,
              "final": False}
    for trial_id, label, tune_rows in (("a_0", "sft", [{**report, "time_total_s": 5.0}]), ("a_1", "late", []),
                                       ("a_2", "never", [])):
        write_config(tmp_path, trial_id, {"trial": {"variant": {"label": label}}})
        tune_dir(trial_id, label, tune_rows)
    append_report(tmp_path, "a_0", report)
    append_report(tmp_path, "a_1", report)  # in its own log only
    got = {label: summarise_trial(rows) for label, rows in trial_reports(tmp_path).items()}
    assert got["sft"]["wall_s"] == 5.0 and got["sft"]["startup_s"] == 2.0  # Tune's clock: 5 − 2 − 1
    assert got["late"]["status"] == "stopped at step 2" and got["late"]["train_tok_per_s"] == 50
    assert got["late"]["wall_s"] is None and got["late"]["startup_s"] is None
    assert got["never"] == {"status": "no report"}


def test_slot_time_splits_the_trial_slots():
    from bench.study_gpu import slot_time

    trials = {
        "a": {"wall_s": 100.0, "startup_s": 40.0, "worker_start_s": 20.0, "setup_s": 15.0, "train_s": 35.0, "eval_s": 25.0},
        "b": {"wall_s": 50.0, "startup_s": 30.0, "worker_start_s": 10.0, "setup_s": 10.0, "eval_s": 20.0},
        "c": {"status": "no report"},
    }
    st = slot_time(trials, sweep_wall_s=100.0, concurrency=2)
    assert st["slot_s"] == 200.0 and st["ray_start_s"] == 30.0 and st["setup_s"] == 25.0
    assert st["other_start_s"] == 15.0  # (40 + 30) − 30 − 25: waiting for a GPU share, a cache
    assert st["train_s"] == 35.0 and st["eval_s"] == 45.0 and st["no_trial_s"] == 50.0  # 200 − 150
    assert st["train_pct"] == 17.5 and st["no_trial_pct"] == 25.0 and st["ray_start_pct"] == 15.0


def test_gpu_slot_time_counts_a_trial_started_ahead_from_the_end_of_its_wait():
    from bench.study_gpu import gpu_slot_time

    trials = {
        # Found a slot free: held from the end of Ray's start, 100 − 20.
        "first": {"wall_s": 100.0, "worker_start_s": 20.0, "setup_model_s": 10.0, "setup_data_s": 2.0},
        # Started ahead: Ray 20, weights 10, data 2, cache 3, wait 25 before it held one: 90 − 60.
        "ahead": {"wall_s": 90.0, "worker_start_s": 20.0, "setup_model_s": 10.0, "setup_data_s": 2.0,
                  "cache_wait_s": 3.0, "slot_wait_s": 25.0},
        "none": {"status": "no report"},
    }
    g = gpu_slot_time(trials, sweep_wall_s=100.0, gpu_slots=2)
    assert g == {"slot_s": 200.0, "held_s": 110.0, "held_pct": 55.0, "slot_wait_s": 25.0}


def test_the_gpu_slots_come_from_the_sweeps_sharing_line(tmp_path):
    from bench.study_gpu import _gpu_slots

    log = tmp_path / "sweep.log"
    log.write_text("GPU sharing (resources.gpus_per_worker=auto): 2 trial(s) per GPU — planned 35.5 GB per trial of "
                   "79 GB (...); 1 more per GPU start(s) ahead\nsweep study: 7 trials, up to 3 at a time -> /x\n")
    assert _gpu_slots(log) == 2
    log.write_text("sweep study: 7 trials, up to 2 at a time -> /x\n")
    assert _gpu_slots(log) is None and _gpu_slots(tmp_path / "missing.log") is None


def test_speed_settings_come_from_a_recorded_trial_config(tmp_path):
    from bench.study_gpu import settings_line, speed_settings
    from trainables.config import TrialConfig
    from trainables.train_graphs import PACK_BUCKET
    from trainables.trial_log import write_config

    assert speed_settings(tmp_path) == {}  # no trial recorded its config yet
    cfg = TrialConfig.model_validate({"model": {"lean_lora": False}, "eval": {"share_prefixes": False}})
    write_config(tmp_path, "t1", {"trial": cfg.model_dump()})
    got = speed_settings(tmp_path)
    assert got["model.lean_lora"] is False and got["model.fused_norm"] is True
    assert got["eval.share_prefixes"] is False and got["eval.joint_final"] is True
    assert got["train.cuda_graphs"] is True and got["PACK_BUCKET"] == PACK_BUCKET
    assert all(v is not None for v in got.values())  # every name is a real setting
    assert settings_line(got).startswith("speed settings: model.fused_norm=True, model.lean_lora=False, ")
    assert settings_line({}) == "speed settings: not recorded"

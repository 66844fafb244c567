"""The sweep's console lines read the keys a trial reports: losses, dev/test avg, peak memory."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pandas as pd


def _trial(label: str) -> SimpleNamespace:
    return SimpleNamespace(config={"trial": {"variant": {"label": label}}}, trial_id="abc", path=None)


def test_progress_line_shows_losses_dev_and_test_avg_and_memory():
    from tuner.sweep import _progress_callback

    out = io.StringIO()
    progress = _progress_callback(out)
    result = {"step": 4, "avg": 41.25, "train/ce": 1.5, "train/kd": 0.25, "test/avg": 39.0, "mem/peak_gpu_gb": 2.5}
    progress.on_trial_result(0, [], _trial("distill λ=0.5"), result)
    progress.on_trial_result(0, [], _trial("base"), {"step": 0, "avg": 12.0})
    first, second = out.getvalue().splitlines()
    assert first.endswith("distill λ=0.5        step     4  dev avg  41.2 ce 1.500 kd 0.250 test avg 39.0 mem 2.5 GB")
    assert second.endswith("base                 step     0  dev avg  12.0")


def test_stopped_early_and_peak_memory_notes():
    from tuner.sweep import _stopped_early, _trial_notes

    rows = [("t1", "sft", 2, 30.0, False), ("t1", "sft", 4, 35.0, True), ("t2", "distill λ=0.5", 2, 20.5, False)]
    df = pd.DataFrame([{"trial_id": t, "label": lab, "split": "dev", "task": "all", "lang": "avg", "metric": "headline",
                        "step": s, "value": v, "final": f} for t, lab, s, v, f in rows])
    assert _stopped_early(df) == ["distill λ=0.5 (step 2, dev avg 20.5)"]
    grid = [SimpleNamespace(config=_trial("sft").config, path=None, metrics={"mem/peak_gpu_gb": 1.25}),
            SimpleNamespace(config=_trial("base").config, path=None, metrics={"avg": 3.0})]
    assert _trial_notes(grid) == ["peak GPU memory per trial: sft 1.2 GB"]

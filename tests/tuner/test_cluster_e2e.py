"""The service as users run it: `ray job submit` to a real token-protected head, and --resume after
the sweep's driver is killed part-way. Both start their own Ray processes (slow: marked e2e)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.tuner.reference_run import assert_same_final, reports
from trainables.trial_log import logged_trials, read_reports

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "train.steps=4", "train.eval_every=2", "train.batch_size=4", "train.warmup_steps=1",
    "data.max_train_per_task=12", "data.synthetic_sizes={train: 12, dev: 4, test: 4}",
    "eval.dev_per_pair=2", "eval.test_per_pair=2",
    "eval.max_new_tokens={nli: 2, pa: 2, qa: 4, ner: 6, pos: 6}", "teacher.top_k=64",
    # The smoke preset's machinery (ASHA, SFT + control λ=0.05 + distill), without its base/fewshot columns.
    "variants=[]", "control_lambda=0.05", "search.scheduler=asha",
]


def _sets(extra: list[str] = ()) -> list[str]:
    return [a for s in [*TINY, *extra] for a in ("--set", s)]


def _ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


@pytest.mark.e2e
def test_ray_job_submit_to_a_token_protected_head(tmp_path):
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_memory_monitor_refresh_ms": "0",
           # The job's `python` is this interpreter's, activated or not.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    port, dash = 6390, 8290
    # Ray's Unix sockets live under --temp-dir: keep it short (pytest's tmp_path exceeds 108 bytes).
    ray_tmp = Path(tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp"))
    head = subprocess.Popen(
        [_ray_bin(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=4", "--disable-usage-stats",
         f"--temp-dir={ray_tmp}", "--ray-client-server-port=10201",
         "--min-worker-port=20000", "--max-worker-port=20999",
         # Not the defaults: another Ray on this machine (the tests' own session) holds those.
         "--dashboard-agent-listen-port=52399", "--dashboard-agent-grpc-port=52398",
         "--runtime-env-agent-port=52397", "--metrics-export-port=52396", "--node-manager-port=52395",
         "--object-manager-port=52394"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 300
        while True:  # the Jobs API answers once the dashboard is up
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answered (401 without a token): it is up
            except Exception:
                if time.time() > deadline:
                    raise TimeoutError("the Ray head did not come up")
                time.sleep(1)
        # Token auth is on: the Jobs API refuses a request without the token.
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{address}/api/jobs/", timeout=5)
        assert err.value.code in (401, 403)

        storage = tmp_path / "sweeps"
        cmd = [_ray_bin(), "job", "submit", "--address", address, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps({"env_vars": {
                   "LAMTUNE_HOME": os.environ["LAMTUNE_HOME"], "HF_HUB_OFFLINE": "1"}}),
               "--", "python", "-m", "tuner", "sweep", "smoke", *_sets(["distill_lambdas=[0.5]"]),
               "--storage", str(storage), "--name", "job-smoke"]
        for _ in range(24):  # the head's job agent can come up a little after its dashboard
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
            if "No available agent" not in r.stderr + r.stdout:
                break
            time.sleep(5)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "succeeded" in (r.stdout + r.stderr)
        assert "Δ vs SFT" in r.stdout
        df = pd.read_parquet(storage / "job-smoke" / "results.parquet")
        assert set(df["label"]) == {"sft", "control λ=0.05", "distill λ=0.5"}
        assert (df[df["split"] == "test"]["final"]).all()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        # Only this head's processes (they all name its temp dir), never another Ray on the machine.
        subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], check=False)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _final_trials(exp: Path) -> set[str]:
    """Ids of the trials whose log holds their final report."""
    return {d.name for d in logged_trials(exp) if any(r.get("final") for r in read_reports(d))}


def _midway_trials(exp: Path) -> set[str]:
    """Trials that reported a checkpointed evaluation but not their final one."""
    logs = {d.name: read_reports(d) for d in logged_trials(exp)}
    return {t for t, rows in logs.items() if rows and not any(r.get("final") for r in rows)}


@pytest.mark.e2e
def test_resume_after_the_driver_is_killed(tmp_path):
    storage = tmp_path / "sweeps"
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_memory_monitor_refresh_ms": "0"}
    env.pop("RAY_ADDRESS", None)
    # Two concurrent trials at most, four in all, 8 steps with a checkpoint at every evaluation (2
    # steps): kill once a trial has finished and another is past a checkpoint but not finished. No
    # ASHA: every trial must reach its end for the count below (what ASHA stops is timing-dependent).
    args = [sys.executable, "-m", "tuner", "sweep", "smoke",
            *_sets(["resources.max_concurrent_trials=2", "search.scheduler=none", "train.steps=8"]),
            "--storage", str(storage), "--name", "resumable"]
    proc = subprocess.Popen(args, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp = storage / "resumable"
    # A trial logs its final report just before Ray stores its last checkpoint: "finished" means
    # logged final at least 3 s before the kill (Tune has recorded it: TUNE_GLOBAL_CHECKPOINT_S=1).
    final_since: dict[str, float] = {}
    try:
        deadline = time.time() + 600
        while True:
            now = time.time()
            for t in _final_trials(exp):
                final_since.setdefault(t, now)
            settled = {t for t, since in final_since.items() if now - since >= 3}
            if settled and _midway_trials(exp):
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert now < deadline, "no trial finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_before, midway = settled, _midway_trials(exp)
    steps_before = {t: [r["step"] for r in reports(exp, t)] for t in midway}
    # As text: NaN metrics (e.g. an empty language) compare equal only that way.
    lines_before = {t: json.dumps(reports(exp, t), sort_keys=True) for t in finished_before}
    assert 1 <= len(finished_before) < 4 and midway

    # Without --resume the CLI refuses to start over in the same directory.
    r = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "add --resume" in r.stderr

    r = subprocess.run([*args, "--resume"], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming" in r.stdout
    # The finished trials were kept, not run again (one Tune had not marked finished may repeat its
    # final report from its last checkpoint: the same line); the others ran to the end.
    for t in finished_before:
        assert json.dumps(reports(exp, t), sort_keys=True) == lines_before[t]
    assert len(_final_trials(exp)) == 4
    # The trials killed midway went on from their last checkpoint: no step reported twice, and they
    # end exactly where an uninterrupted run of the same trial ends.
    for t in midway:
        steps = [r["step"] for r in reports(exp, t)]
        assert steps == [2, 4, 6, 8] and steps[: len(steps_before[t])] == steps_before[t], (t, steps)
        assert_same_final(exp, t, tmp_path / "reference")
    df = pd.read_parquet(exp / "results.parquet")
    assert df[df["final"]].groupby("label")["trial_id"].nunique().eq(1).all()
    assert set(df["label"]) == {"sft", "control λ=0.05", "distill λ=0.05", "distill λ=0.5"}

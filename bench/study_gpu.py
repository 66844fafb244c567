"""The product's own path at the study's shape: `python -m tuner sweep seed-multitask` on a
Llama-3.2-3B-shaped model with random bf16 weights, timed phase by phase.

    python bench/study_gpu.py --data /tmp/xs/xtreme-sample --out $OUT          # on the GPU machine
    python bench/study_gpu.py --shape llama-test --data ../shared/data/xtreme-sample --out /tmp/s \\
        --steps 4 --eval-every 2 --dev 2 --test 2 --train-per-task 20            # logic check on a CPU

It (1) builds the product's `random:llama-3.2-3b` model (trainables/random_model.py): seeded
random weights of the published shape and a byte-level BPE with Llama-3's vocabulary size
(128,256) and pre-tokenisation learnt from the XTREME sample's rendered prompts and answers, so
sequence lengths are realistic (the tiny default's 2,048-token tokenizer cuts real text into far
more tokens), (2) runs the sweep through the CLI in a subprocess, as a user would, from an empty
cache, sampling GPU utilisation and memory with nvidia-smi, and (3) reads what the product itself reported —
teacher-cache build statistics, each trial's reports (training tokens and seconds, generation
counts and seconds, peak memory) — into `study.json` and `study.txt`, with the projected wall
time of the study at full size from the measured rates.

Random weights generate to every task's token budget (no EOS, rarely a newline): evaluation here
is the worst case. The XTREME sample has no English train split for every task, so training reads
the dev split (data.train_split=dev) and evaluation too (eval.test_split=dev): a speed benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainables.random_model import ARCHITECTURES  # noqa: E402

#: bf16 dense matrix-product rate measured on the H200 (bench/gpu_speed.py, section peak).
H200_BF16_PEAK = 790e12
#: The study at full size (the seed study's protocol), for the projection.
FULL = dict(steps=1000, train_per_task=5000, dev_per_pair=50, eval_every=100, test_per_pair=500, variants=7)


# --------------------------------------------------------------------------- model


def ensure_model(shape: str, data_dir: Path, work: Path) -> tuple[Path, int]:
    """The product's `random:<shape>` model (seeded weights, a BPE of the shape's vocabulary learnt
    from the sample's rendered prompts and answers), built once under `work`/home (LAMTUNE_HOME,
    which the sweep's processes inherit) as the sweep would, and its parameter count."""
    from transformers import AutoConfig

    from trainables.config import TrialConfig
    from trainables.memory_plan import parameter_count
    from trainables.models import prepare_model

    os.environ.setdefault("LAMTUNE_HOME", str(work / "home"))
    t0 = time.perf_counter()
    cfg = TrialConfig.model_validate({"model": {"name": f"random:{shape}"},
                                      "data": {"source": f"local:{data_dir}"}}).model
    model_dir = Path(prepare_model(cfg, sys.stdout))
    n_params = parameter_count(AutoConfig.from_pretrained(model_dir))
    print(f"model random:{shape}: {n_params / 1e9:.2f} B parameters in {model_dir}, "
          f"set-up {time.perf_counter() - t0:.0f}s", flush=True)
    return model_dir, n_params


# --------------------------------------------------------------------------- GPU sampling


class GpuSampler(threading.Thread):
    """Samples GPU utilisation (%) and memory used (MiB) every `period` s with nvidia-smi."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.period, self.samples, self.stop = period, [], threading.Event()

    def run(self) -> None:
        """Sample until stopped (nothing when nvidia-smi is absent)."""
        while not self.stop.is_set():
            try:
                line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=5).stdout.strip().splitlines()[0]
                util, mem = (float(x) for x in line.split(","))
                self.samples.append((time.time(), util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            time.sleep(self.period)


# --------------------------------------------------------------------------- NVIDIA MPS


def _mps_control(command: str) -> str:
    """What the MPS control daemon answers to one command (its stdin)."""
    return subprocess.run(["nvidia-cuda-mps-control"], input=command + "\n", capture_output=True, text=True,
                          timeout=30).stdout.strip()


def start_mps(work: Path) -> dict[str, Any]:
    """NVIDIA MPS for the sweep's processes, as README's 'Sharing a GPU with NVIDIA MPS' describes: a
    control daemon (pipe and logs under `work`, named to the sweep through the environment), then one
    short CUDA process to check that clients reach a server. {'on': False, 'why': …} where it cannot."""
    import shutil

    if shutil.which("nvidia-cuda-mps-control") is None:
        return {"on": False, "why": "nvidia-cuda-mps-control not found"}
    for name, sub in (("CUDA_MPS_PIPE_DIRECTORY", "mps-pipe"), ("CUDA_MPS_LOG_DIRECTORY", "mps-log")):
        (work / sub).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(work / sub)
    started = subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True, text=True, timeout=30)
    if started.returncode:
        return {"on": False, "why": f"daemon: rc {started.returncode} {started.stderr.strip()[-200:]}"}
    client = subprocess.run([sys.executable, "-c", "import torch; torch.ones(1, device='cuda').sum().item()"],
                            capture_output=True, text=True, timeout=120)
    servers = _mps_control("get_server_list")
    if client.returncode or not servers:
        stop_mps()
        log = (work / "mps-log" / "control.log")
        return {"on": False, "why": f"client rc {client.returncode} {client.stderr.strip()[-300:]}; servers "
                f"{servers!r}; control.log {log.read_text()[-300:] if log.is_file() else '-'}"}
    return {"on": True, "servers": servers.split()}


def stop_mps() -> None:
    """Ask the MPS control daemon to quit (its server goes with it)."""
    try:
        _mps_control("quit")
    except (OSError, subprocess.SubprocessError):
        pass


# --------------------------------------------------------------------------- reading what the product reported


def trial_reports(experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each trial's reports, by variant label: the product's own trial logs (`trainables.trial_log`:
    on disk when reported), with the time fields of Tune's result.json rows of the same evaluation.

    Tune's copy can lag the trial: in study run 10 the sweep was stopped while `distill λ=0.05`'s
    step-100 report was in its own log but not yet in Tune's result.json."""
    from trainables.trial_log import logged_trials, read_config, read_reports

    out: dict[str, list[dict[str, Any]]] = {}
    for trial in sorted(experiment_dir.glob("trial_*")):
        if not (trial / "params.json").is_file():  # e.g. trial_logs/, the product's own logs
            continue
        rows = [json.loads(ln) for ln in (trial / "result.json").read_text().splitlines() if ln.strip()] \
            if (trial / "result.json").is_file() else []
        params = json.loads((trial / "params.json").read_text())
        out[params.get("trial", {}).get("variant", {}).get("label", trial.name)] = rows
    for log in logged_trials(experiment_dir):
        config = read_config(log) or {}
        label = config.get("trial", {}).get("variant", {}).get("label", f"trial_{log.name}")
        tune = {int(r.get("eval_index", 0)): r for r in out.get(label, [])}
        own = read_reports(log)
        if len(own) >= len(tune):
            out[label] = [{**tune.get(int(r.get("eval_index", 0)), {}), **r} for r in own]
    return out


def summarise_trial(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A trial's figures from its own reports: start-up, training rate, evaluation rates, memory."""
    from trainables.metric_keys import ALL, AVG, eval_key, gen_key, mem_key, on_test, time_key, train_key

    if not rows:
        return {"status": "no report"}
    # Student tokens (prompt + answer, what the forward runs over) when the product reports them;
    # answer tokens (the loss's) otherwise.
    seen = train_key("student_tokens_seen") if train_key("student_tokens_seen") in rows[-1] else train_key("tokens_seen")
    train_k, eval_k = time_key("train_s"), time_key("eval_s")

    def most(key: str) -> float:
        """The largest value any report gave this key (0 when none did)."""
        return max((r.get(key, 0.0) for r in rows), default=0.0)

    def gen(r: dict[str, Any], name: str, zero: float) -> float:
        return r.get(gen_key(name), zero) + r.get(on_test(gen_key(name)), zero)

    train_tokens = sum(r.get(seen, 0) for r in rows[:1]) + sum(
        b.get(seen, 0) - a.get(seen, 0) for a, b in zip(rows, rows[1:]))
    train_s = sum(r.get(train_k, 0.0) for r in rows)
    # After the first evaluation: the step's rate without the first steps' compilation.
    later = [(b.get(seen, 0) - a.get(seen, 0), b.get(train_k, 0.0)) for a, b in zip(rows, rows[1:])]
    later_s = sum(s for _, s in later)
    eval_s = sum(r.get(eval_k, 0.0) for r in rows)
    gen_tokens = sum(gen(r, "tokens", 0) for r in rows)
    gen_examples = sum(gen(r, "examples", 0) for r in rows)
    gen_s = sum(gen(r, "seconds", 0.0) for r in rows)
    first = rows[0]
    # Tune's clock (time_total_s) is missing from a report only the trial's own log holds.
    startup = (first["time_total_s"] - first.get(train_k, 0.0) - first.get(eval_k, 0.0)
               if "time_total_s" in first else None)
    steps = rows[-1].get("step", 0)
    return {
        "status": "finished" if rows[-1].get("final") else f"stopped at step {steps}",
        "steps": steps,
        "wall_s": rows[-1].get("time_total_s"),
        "startup_s": round(startup, 1) if startup is not None else None,
        # Of the start-up, the worker's own set-up (model, data, cache, policy); the rest is Ray's
        # (trial actor, worker process, imports). The first step compiles the layers.
        "setup_s": round(first[time_key("setup_s")], 1) if time_key("setup_s") in first else None,
        "first_step_s": round(first[time_key("first_step_s")], 1) if time_key("first_step_s") in first else None,
        # Of the start-up: Ray's part (driver function start → worker loop start: the Train
        # controller, the worker process and its imports), and the set-up's model and data parts.
        **{f"{part}_s": round(first[time_key(f"{part}_s")], 1)
           for part in ("worker_start", "worker_process", "setup_model", "setup_data", "setup_to_device")
           if time_key(f"{part}_s") in first},
        # Of the start-up, the wait for a teacher cache the sweep was still building (the trial
        # started beside the build and loaded its model meanwhile).
        "cache_wait_s": round(first.get(time_key("cache_wait_s"), 0.0), 1),
        # Of the start-up, the wait of a trial started ahead of a free GPU slot (resources.start_ahead).
        "slot_wait_s": round(first.get(time_key("slot_wait_s"), 0.0), 1),
        "train_s": round(train_s, 1),
        "train_tokens": int(train_tokens),
        "train_tok_per_s": round(train_tokens / train_s) if train_s else None,
        "step_s": round(train_s / steps, 4) if steps and train_s else None,
        "train_tok_per_s_after_first_eval": round(sum(n for n, _ in later) / later_s) if later_s else None,
        "first_interval_s": round(rows[0].get(train_k, 0.0), 1),
        # Seconds per step after the first evaluation, and what the first interval cost beyond
        # that (compilation, allocator warm-up): the projection's two training terms.
        "steady_step_s": round(later_s / (steps - rows[0].get("step", 0)), 4) if later_s else None,
        "eval_s": round(eval_s, 1),
        "gen_tokens": int(gen_tokens),
        "gen_examples": int(gen_examples),
        "gen_tok_per_s": round(gen_tokens / gen_s) if gen_s else None,
        "gen_examples_per_s": round(gen_examples / gen_s, 1) if gen_s else None,
        # Decoding forwards (prefills included) and prefills: with continuous batching, the
        # steps approach generated tokens / rows, plus each length group's last answers.
        "gen_decode_steps": int(sum(gen(r, "decode_steps", 0) for r in rows)),
        "gen_prefills": int(sum(gen(r, "batches", 0) for r in rows)),
        # Prompt tokens, and what the prefills ran with each one's left padding (None before it was reported).
        "gen_prompt_tokens": int(sum(gen(r, "prompt_tokens", 0) for r in rows)),
        "gen_prefill_tokens": int(sum(gen(r, "prefill_tokens", 0) for r in rows)) or None,
        # Prompt tokens a shared prefix served (prefilled once per evaluation; eval.share_prefixes).
        "gen_prefix_tokens": int(sum(gen(r, "prefix_tokens", 0) for r in rows)),
        # Of the generation seconds: the prefill forwards, and the rest of the streams (decoding
        # steps and their host reads), on the GPU's clock (None before they were reported).
        "gen_prefill_s": round(sum(gen(r, "prefill_s", 0.0) for r in rows), 1) or None,
        "gen_decode_s": round(sum(gen(r, "decode_s", 0.0) for r in rows), 1) or None,
        "peak_gpu_gb": round(most(mem_key("peak_gpu_gb")), 1) or None,
        # Recorded decoder passes (train.cuda_graphs): seconds spent recording them so far (the
        # trial reports a running total), and the most padded lengths one interval used.
        "graph_record_s": round(most(time_key("graph_record_s")), 1),
        "graph_shapes": int(most(train_key("graph_shapes"))),
        # Their memory (largest in one interval) and the passes their byte budget sent eager (running total).
        "graph_gb": round(most(train_key("graph_gb")), 1),
        "graph_reserved_gb": round(most(train_key("graph_reserved_gb")), 1),
        "graph_over_budget_steps": int(most(train_key("graph_over_budget_steps"))),
        "test_avg": rows[-1].get(eval_key(ALL, AVG, split="test")),
    }


def cache_figures(cache_root: Path, n_params: int) -> list[dict[str, Any]]:
    """Each teacher cache's build statistics as the product wrote them, with its share of the peak."""
    out = []
    for meta in sorted(cache_root.glob("*/manifest.json")):
        stats = json.loads(meta.read_text()).get("stats", {})
        if not stats.get("seconds"):
            continue
        def pct(rate: float) -> float:
            return round(100 * 2 * n_params * rate / H200_BF16_PEAK, 1)

        rate = stats["teacher_tokens"] / stats["seconds"]
        row = {"cache": meta.parent.name, "seconds": round(stats["seconds"], 1),
               "teacher_tokens": stats["teacher_tokens"], "answer_tokens": stats["answer_tokens"],
               "teacher_tok_per_s": round(rate), "pct_of_bf16_peak": pct(rate)}
        # Where the build's time went, when the product recorded it (trainables/teacher/build.py).
        phases = {k: round(stats[k], 1) for k in ("data_s", "load_s", "encode_s", "forward_s", "write_s") if k in stats}
        if phases:
            row["phases_s"] = phases
        if stats.get("forward_s"):
            fwd = stats["teacher_tokens"] / stats["forward_s"]
            row |= {"forward_tok_per_s": round(fwd), "forward_pct_of_bf16_peak": pct(fwd)}
        if "compiled" in stats:
            row["compiled"] = stats["compiled"]
        # Per task: its forward seconds and rate (a compiled teacher's first task includes compiling).
        tok = stats.get("teacher_tokens_by_task", {})
        fwd_by = {t: s for t, s in stats.get("forward_by_task_s", {}).items() if s > 0 and tok.get(t)}
        if fwd_by:
            row["forward_by_task"] = {t: {"s": round(s, 1), "tok_per_s": round(tok[t] / s),
                                          "pct_of_bf16_peak": pct(tok[t] / s)} for t, s in fwd_by.items()}
        out.append(row)
    return out


def lengths(model_dir: Path, data_dir: Path, train_per_task: int) -> dict[str, float]:
    """Mean student prompt, answer and few-shot teacher lengths (tokens) of the training set."""
    from trainables.config import TrialConfig
    from trainables.data import teacher_encoding, training_pools, training_set
    from trainables.models import load_tokenizer

    cfg = TrialConfig.model_validate({"model": {"name": str(model_dir)},
                                      "data": {"source": f"local:{data_dir}", "train_split": "dev",
                                               "max_train_per_task": train_per_task}})
    tok = load_tokenizer(cfg.model)
    pools = training_pools(cfg)
    examples = training_set(cfg, tok, pools)
    teacher = [len(teacher_encoding(cfg, tok, e, pools[e.task], True).input_ids) for e in examples[::10]]
    return {"student_prompt": round(statistics.mean(e.student.answer_start for e in examples), 1),
            "answer": round(statistics.mean(e.student.answer_len for e in examples), 1),
            "teacher_fewshot": round(statistics.mean(teacher), 1), "examples": len(examples)}


def slot_time(trials: dict[str, dict[str, Any]], sweep_wall_s: float, concurrency: int) -> dict[str, float]:
    """Where the sweep's trial slots (trials at once × sweep wall) went, summed over trials: Ray's
    start of each worker, the worker's set-up, the rest of the start-up (waiting for a GPU share,
    a cache build), training, evaluation, and the slot time no trial's clock covered (the cache
    build's share, Tune starting trials, the tail after the last trial)."""
    def total(key: str) -> float:
        return sum(t.get(key) or 0.0 for t in trials.values())

    slots = sweep_wall_s * max(1, concurrency)
    parts = {"ray_start_s": total("worker_start_s"), "setup_s": total("setup_s"),
             "train_s": total("train_s"), "eval_s": total("eval_s")}
    parts["other_start_s"] = max(0.0, total("startup_s") - parts["ray_start_s"] - parts["setup_s"])
    parts["no_trial_s"] = max(0.0, slots - total("wall_s"))
    return {"slot_s": round(slots, 1), **{k: round(v, 1) for k, v in parts.items()},
            **{k[:-2] + "_pct": round(100 * v / slots, 1) if slots else 0.0 for k, v in parts.items()}}


def gpu_slot_time(trials: dict[str, dict[str, Any]], sweep_wall_s: float, gpu_slots: int) -> dict[str, float]:
    """How much of the GPU's slots (trials sharing it × sweep wall) trials held, where trials
    start ahead of a free slot: a trial holds one from the end of Ray's start (when it found one
    free) or from the end of its wait for one (its weights, data and cache wait before it)."""
    held = 0.0
    for t in trials.values():
        before = t.get("worker_start_s") or 0.0
        if t.get("slot_wait_s"):
            before += (t.get("setup_model_s") or 0.0) + (t.get("setup_data_s") or 0.0) + (t.get("cache_wait_s") or 0.0) \
                + t["slot_wait_s"]
        held += max(0.0, (t.get("wall_s") or 0.0) - before)
    slots = sweep_wall_s * max(1, gpu_slots)
    return {"slot_s": round(slots, 1), "held_s": round(held, 1), "held_pct": round(100 * held / slots, 1) if slots else 0.0,
            "slot_wait_s": round(sum(t.get("slot_wait_s") or 0.0 for t in trials.values()), 1)}


def projection(trials: dict[str, dict[str, Any]], caches: list[dict[str, Any]], args: argparse.Namespace,
               concurrency: int, pairs: int) -> dict[str, Any]:
    """The study at full size (FULL) from this run's measured rates."""
    ran = [t for t in trials.values() if t.get("step_s")]
    steady = [t for t in ran if t.get("steady_step_s")]
    # Steady seconds per step plus each trial's first-interval overhead (compilation), when a
    # trial reported twice; else the mean step time, compilation included.
    step_s = statistics.mean(t["steady_step_s"] for t in steady) if steady else (
        statistics.mean(t["step_s"] for t in ran) if ran else 0.0)
    warmup = statistics.mean(max(0.0, t["first_interval_s"] - t["steady_step_s"] * args.eval_every)
                             for t in steady) if steady else 0.0
    ex_rate = [t["gen_examples_per_s"] for t in trials.values() if t.get("gen_examples_per_s")]
    ex_per_s = statistics.mean(ex_rate) if ex_rate else 0.0
    starts = [t["startup_s"] for t in trials.values() if t.get("startup_s") is not None]
    startup = statistics.mean(starts) if starts else 0.0
    cache_s = sum(c["seconds"] for c in caches) * FULL["train_per_task"] / args.train_per_task
    training_variants = len(ran) or 5
    evals = FULL["steps"] // FULL["eval_every"]
    eval_examples = pairs * (evals * FULL["dev_per_pair"] + FULL["test_per_pair"])
    eval_only = FULL["variants"] - training_variants
    trial_s = (training_variants * (startup + warmup + FULL["steps"] * step_s + eval_examples / max(ex_per_s, 1e-9))
               + eval_only * (startup + pairs * (FULL["dev_per_pair"] + FULL["test_per_pair"]) / max(ex_per_s, 1e-9)))
    wall = cache_s + trial_s / max(1, concurrency)
    return {"assumes": FULL | {"trials_at_once": concurrency, "pairs": pairs}, "cache_s": round(cache_s),
            "trials_s_total": round(trial_s), "wall_s": round(wall), "wall_min": round(wall / 60, 1),
            "rates": {"step_s": step_s, "first_interval_overhead_s": warmup, "eval_examples_per_s": ex_per_s,
                      "startup_s": startup}}


# --------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the XTREME sample folder")
    p.add_argument("--out", type=Path, required=True, help="folder for study.json and study.txt")
    p.add_argument("--work", type=Path, default=Path("/tmp/lamtune-study"))
    p.add_argument("--shape", choices=sorted(ARCHITECTURES), default="llama-3.2-3b",
                   help="a random: architecture of the product (llama-test: a 2-layer one for a CPU check)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--dev", type=int, default=20, help="dev examples per (task, language)")
    p.add_argument("--test", type=int, default=100, help="test examples per (task, language)")
    p.add_argument("--train-per-task", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=520,
                   help="seconds from the bench's start (model set-up included) before the sweep is stopped")
    p.add_argument("--set", dest="extra", action="append", default=[], help="more --set overrides for the sweep")
    p.add_argument("--mps", choices=("start", "off"), default="off",
                   help="start: run the sweep under NVIDIA MPS (a control daemon started before it, stopped after; "
                        "README, 'Sharing a GPU with NVIDIA MPS'); off: trials sharing the GPU take turns on it")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    storage = args.work / "sweeps"
    if storage.exists():
        import shutil

        shutil.rmtree(storage)  # from an empty cache, every time
    t0 = time.perf_counter()
    model_dir, n_params = ensure_model(args.shape, args.data, args.work)
    t_setup = time.perf_counter() - t0

    use_gpu = "true" if args.shape != "llama-test" else "false"
    sets = [f"model.name=random:{args.shape}", f"data.source=local:{args.data}", "data.train_split=dev",
            "eval.test_split=dev", f"data.max_train_per_task={args.train_per_task}", f"resources.use_gpu={use_gpu}",
            f"teacher.use_gpu={use_gpu}", f"train.steps={args.steps}", f"train.eval_every={args.eval_every}",
            f"eval.dev_per_pair={args.dev}", f"eval.test_per_pair={args.test}", *args.extra]
    cmd = [sys.executable, "-m", "tuner", "sweep", "seed-multitask", "--storage", str(storage), "--name", "study"]
    for s in sets:
        cmd += ["--set", s]
    mps = start_mps(args.work) if args.mps == "start" and use_gpu == "true" else {"on": False, "why": "--mps off"}
    print(f"NVIDIA MPS: {mps}", flush=True)
    print("$ " + " ".join(cmd), flush=True)
    sampler = GpuSampler()
    sampler.start()
    t_sweep = time.perf_counter()
    log = (args.out / "sweep.log").open("w")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    timer = threading.Timer(max(30.0, args.timeout - t_setup), proc.kill)
    timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        log.flush()
        print(line, end="", flush=True)
    rc = proc.wait()
    timer.cancel()
    wall = time.perf_counter() - t_sweep
    sampler.stop.set()
    if mps["on"]:
        stop_mps()

    experiment = storage / "study"
    _archive(storage, args.out / "trials.tar.gz")
    trials = {label: summarise_trial(rows) for label, rows in trial_reports(experiment).items()}
    caches = cache_figures(storage / "teacher_cache", n_params)
    util = [u for _, u, _ in sampler.samples]
    mem = [m for _, _, m in sampler.samples]
    concurrency = _concurrency(args.out / "sweep.log")
    gpu_slots = _gpu_slots(args.out / "sweep.log") or concurrency
    from trainables.config import TrialConfig
    from trainables.data import available_langs

    data_cfg = TrialConfig.model_validate({"data": {"source": f"local:{args.data}"}}).data
    pairs = sum(len(available_langs(data_cfg, t)) for t in data_cfg.tasks)
    train_rates = [t["train_tok_per_s"] for t in trials.values() if t.get("train_tok_per_s")]
    steady = [t["train_tok_per_s_after_first_eval"] for t in trials.values() if t.get("train_tok_per_s_after_first_eval")]
    gen_tok = sum(t.get("gen_tokens", 0) for t in trials.values())
    gen_s = sum(t.get("gen_tokens", 0) / t["gen_tok_per_s"] for t in trials.values() if t.get("gen_tok_per_s"))
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv), "sweep_command": " ".join(cmd),
        "shape": args.shape, "parameters": n_params, "sweep_rc": rc, "sweep_wall_s": round(wall, 1), "mps": mps,
        # Trials using the GPU at once (its slots), and trials Ray ran at once (more where trials start ahead).
        "setup_s": round(t_setup, 1), "trials_at_once": gpu_slots, "trials_started_at_once": concurrency,
        "gpu_util_mean_pct": round(statistics.mean(util), 1) if util else None,
        "gpu_mem_max_mib": max(mem) if mem else None, "gpu_samples": len(util),
        "caches": caches, "trials": trials, "lengths": lengths(model_dir, args.data, args.train_per_task),
        "train_tok_per_s_per_trial": train_rates,
        # Summed over the trials that train at the same time: each trial's own rate × trials at once.
        "train_tok_per_s_sharing_gpu": round(statistics.mean(train_rates) * gpu_slots) if train_rates else None,
        "train_tok_per_s_sharing_gpu_after_first_eval": round(statistics.mean(steady) * gpu_slots) if steady else None,
        "gen_tok_per_s": round(gen_tok / gen_s) if gen_s else None,
    }
    result["speed_settings"] = speed_settings(experiment)
    result["projection_full_study"] = projection(trials, caches, args, gpu_slots, pairs)
    result["slot_time"] = slot_time(trials, wall, concurrency)
    result["gpu_slot_time"] = gpu_slot_time(trials, wall, gpu_slots)
    (args.out / "study.json").write_text(json.dumps(result, indent=1))
    table = render(result)
    (args.out / "study.txt").write_text(table)
    print(table)
    return 0 if rc == 0 else 1


def _archive(storage: Path, target: Path) -> None:
    """Each trial's own files (reports, params, errors, retries) and the cache manifests, for later reading."""
    import tarfile

    with tarfile.open(target, "w:gz") as tar:
        for pattern in ("study/trial_*/result.json", "study/trial_*/params.json", "study/trial_*/error.txt",
                        "study/trial_*/retries.json", "study/trial_logs/*/*", "study/failed_trials.json",
                        "teacher_cache/*/manifest.json"):
            for f in storage.glob(pattern):
                tar.add(f, arcname=str(f.relative_to(storage)))


def _gpu_slots(log: Path) -> int | None:
    """Trials sharing one GPU at once, as the sweep printed ('N trial(s) per GPU'); None when it did not."""
    import re

    m = re.search(r"(\d+) trial\(s\) per GPU", log.read_text()) if log.is_file() else None
    return int(m[1]) if m else None


def _concurrency(log: Path) -> int:
    """Trials the sweep ran at once, as it printed ('up to N at a time')."""
    import re

    m = re.search(r"up to (\d+) at a time", log.read_text()) if log.is_file() else None
    return int(m[1]) if m else 1


#: The trial settings that change speed and not results, recorded beside the figures (which levers a
#: run had on: runs are compared across sessions and code versions).
SPEED_SETTINGS = {"model": ("fused_norm", "lean_lora", "dtype"),
                  "train": ("cuda_graphs", "compile"),
                  "eval": ("cuda_graphs", "grouped_attention", "reuse_decoder", "merge_lora", "pool_tasks",
                           "share_prefixes", "joint_final"),
                  "resources": ("gpus_per_worker", "start_ahead")}


def speed_settings(experiment: Path) -> dict[str, Any]:
    """The speed settings of the sweep's first recorded trial config, and the packing bucket; {} when
    no trial recorded its config."""
    from trainables.train_graphs import PACK_BUCKET
    from trainables.trial_log import logged_trials, read_config

    for log_dir in logged_trials(experiment):
        trial = (read_config(log_dir) or {}).get("trial", {})
        out = {f"{section}.{key}": trial.get(section, {}).get(key)
               for section, keys in SPEED_SETTINGS.items() for key in keys}
        return {**out, "PACK_BUCKET": PACK_BUCKET}
    return {}


def settings_line(settings: dict[str, Any]) -> str:
    """The speed settings as one line of the table."""
    return "speed settings: " + (", ".join(f"{k}={v}" for k, v in settings.items()) or "not recorded")


def render(r: dict[str, Any]) -> str:
    """The study's figures as a plain-text table."""
    lines = [f"study benchmark {r['date']} — {r['shape']} ({r['parameters'] / 1e9:.2f} B), sweep rc {r['sweep_rc']}",
             f"sweep wall {r['sweep_wall_s']:.0f}s (model set-up {r['setup_s']:.0f}s before it), "
             f"{r['trials_at_once']} trials on the GPU at a time"
             + (f" ({r['trials_started_at_once']} started)" if r.get("trials_started_at_once", r["trials_at_once"])
                != r["trials_at_once"] else "")
             + f", GPU util mean {r['gpu_util_mean_pct']}%, "
             f"GPU memory max {r['gpu_mem_max_mib']} MiB",
             "NVIDIA MPS: " + ("on" if r.get("mps", {}).get("on") else f"off ({r.get('mps', {}).get('why', 'not asked')})"),
             f"mean lengths (tokens): {r['lengths']}",
             settings_line(r.get("speed_settings", {})), ""]
    for c in r["caches"]:
        lines.append(f"cache {c['cache']}: {c['seconds']}s, {c['teacher_tok_per_s']:,} teacher tok/s "
                     f"({c['pct_of_bf16_peak']}% of the H200's measured bf16 peak), {c['answer_tokens']:,} answer tokens")
        if "phases_s" in c:
            lines.append(f"  phases {c['phases_s']}; forward passes alone {c.get('forward_tok_per_s', 0):,} "
                         f"tok/s ({c.get('forward_pct_of_bf16_peak', 0)}% of peak)"
                         + (f", teacher {'compiled' if c['compiled'] else 'eager'}" if "compiled" in c else ""))
        if "forward_by_task" in c:
            lines.append("  forward by task: " + ", ".join(
                f"{t} {f['s']}s {f['pct_of_bf16_peak']}%" for t, f in c["forward_by_task"].items()))
    lines += ["", f"{'trial':<22} {'status':<18} {'start s':>7} {'setup s':>7} {'wait s':>6} {'1st step s':>10} {'train tok/s':>11} "
              f"{'step s':>7} {'graphs s':>8} {'graph GB':>8} {'eager':>5} {'eval s':>7} {'gen tok/s':>9} {'ex/s':>6} {'peak GB':>7} {'wall s':>7}"]
    for label, t in r["trials"].items():
        lines.append(f"{label:<22} {t.get('status', ''):<18} {t.get('startup_s') or '-':>7} "
                     f"{t.get('setup_s') or '-':>7} {t.get('cache_wait_s') or '-':>6} {t.get('first_step_s') or '-':>10} "
                     f"{t.get('train_tok_per_s') or '-':>11} {t.get('step_s') or '-':>7} "
                     f"{t.get('graph_record_s') or '-':>8} {t.get('graph_gb') or '-':>8} "
                     f"{t.get('graph_over_budget_steps') or '-':>5} {t.get('eval_s', 0):>7} "
                     f"{t.get('gen_tok_per_s') or '-':>9} {t.get('gen_examples_per_s') or '-':>6} "
                     f"{t.get('peak_gpu_gb') or '-':>7} {round(t.get('wall_s') or 0):>7}")
    lines += ["", f"{'trial':<22} {'ray start s':>11} {'process s':>9} {'model s':>7} {'data s':>6} {'slot wait s':>11} "
              f"{'to GPU s':>8} {'decode steps':>12} "
              f"{'prefills':>8} {'prompt tok':>10} {'prefix tok':>10} {'prefill tok':>11} {'padding':>7} "
              f"{'prefill s':>9} {'decode s':>8} "
              f"{'prefill tok/s':>13}"]
    for label, t in r["trials"].items():
        prompt, prefill = t.get("gen_prompt_tokens") or 0, t.get("gen_prefill_tokens") or 0
        prefix = t.get("gen_prefix_tokens") or 0  # padding: what the prefills ran over the prompt tokens they had to
        lines.append(f"{label:<22} {t.get('worker_start_s') or '-':>11} {t.get('worker_process_s') or '-':>9} "
                     f"{t.get('setup_model_s') or '-':>7} "
                     f"{t.get('setup_data_s') or '-':>6} {t.get('slot_wait_s') or '-':>11} "
                     f"{t.get('setup_to_device_s') or '-':>8} {t.get('gen_decode_steps') or '-':>12} "
                     f"{t.get('gen_prefills') or '-':>8} {prompt or '-':>10} {prefix or '-':>10} {prefill or '-':>11} "
                     f"{f'{prefill / (prompt - prefix):.2f}' if prompt > prefix and prefill else '-':>7} "
                     f"{t.get('gen_prefill_s') or '-':>9} {t.get('gen_decode_s') or '-':>8} "
                     f"{round(prefill / t['gen_prefill_s']) if prefill and t.get('gen_prefill_s') else '-':>13}")
    if "slot_time" in r:
        st = r["slot_time"]
        lines += ["", f"slot time ({r.get('trials_started_at_once', r['trials_at_once'])} trial slots × sweep wall = {st['slot_s']:.0f}s): "
                  + ", ".join(f"{name} {st[key + '_s']:.0f}s ({st[key + '_pct']}%)" for name, key in (
                      ("Ray's worker start", "ray_start"), ("set-up", "setup"), ("other start-up", "other_start"),
                      ("training", "train"), ("evaluation", "eval"), ("no trial", "no_trial")))]
    if "gpu_slot_time" in r:
        g = r["gpu_slot_time"]
        lines.append(f"GPU slots ({r['trials_at_once']} × sweep wall = {g['slot_s']:.0f}s) held by trials: {g['held_s']:.0f}s "
                     f"({g['held_pct']}%); trials started ahead waited {g['slot_wait_s']:.0f}s for a slot in all")
    pj = r["projection_full_study"]
    lines += ["", f"training tok/s summed over trials sharing the GPU: {r['train_tok_per_s_sharing_gpu']} "
              f"(after the first evaluation, compilation excluded: {r['train_tok_per_s_sharing_gpu_after_first_eval']})",
              f"evaluation generated tok/s (all trials' tokens / their generation seconds): {r['gen_tok_per_s']}",
              f"projected full study ({pj['assumes']}): {pj['wall_min']} min "
              f"(cache {pj['cache_s']}s + trials {pj['trials_s_total']}s / {pj['assumes']['trials_at_once']})"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

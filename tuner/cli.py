"""`python -m tuner` (also the `lamtune` console script): sweep, presets, show, cache build."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from tuner.loading import SpecError, load_spec


@functools.cache
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuner", description="Search λ policies for few-shot logit distillation.")
    sub = p.add_subparsers(dest="command", required=True)

    def spec_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("preset", help="a preset name (see `presets`) or a sweep YAML file")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field, e.g. --set train.steps=200 (repeatable)")
        sp.add_argument("--name", help="experiment name (default: the preset's name)")

    sw = sub.add_parser("sweep", help="run a sweep and print its Δ-vs-SFT table")
    spec_args(sw)
    sw.add_argument("--storage", type=Path, help="results root (default: $LAMTUNE_STORAGE or ~/lamtune_results)")
    sw.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    sw.add_argument("--dry-run", action="store_true", help="validate and list the trials, run nothing")

    sub.add_parser("presets", help="list the shipped presets")
    sh = sub.add_parser("show", help="print the fully resolved, validated sweep config")
    spec_args(sh)

    cache = sub.add_parser("cache", help="teacher-cache commands")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    cb = csub.add_parser("build", help="build a sweep's teacher caches now (e.g. on a GPU node)")
    spec_args(cb)
    cb.add_argument("--storage", type=Path, help="results root whose teacher_cache/ to fill")
    return p


def _cmd_presets() -> int:
    from search_spaces.presets import describe, preset_names

    for name in preset_names():
        print(f"{name:<22} {describe(name)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    import yaml

    spec = load_spec(args.preset, args.overrides, args.name)
    print(yaml.safe_dump(json.loads(spec.model_dump_json()), sort_keys=False, allow_unicode=True), end="")
    print("# trials: " + ", ".join(v.label for v in spec.expanded_variants()))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from tuner.sweep import default_storage, run_sweep

    spec = load_spec(args.preset, args.overrides, args.name)
    if args.dry_run:
        storage = (args.storage or default_storage())
        print(f"sweep {spec.name} -> {Path(storage).expanduser() / spec.name}")
        for v in spec.expanded_variants():
            print(f"  {v.label:<24} condition={v.condition} policy={v.policy.name} {v.policy.params} "
                  f"teacher={v.teacher_mode or '-'}{' (protected)' if v.protected else ''}")
        print(f"teacher caches: {', '.join(spec.teacher_modes()) or 'none'}")
        return 0
    outcome = run_sweep(spec, args.storage, resume=args.resume)
    print()
    print(f"Δ vs SFT (test, headline metric per task, mean over languages) — {spec.name}")
    print(outcome.table_markdown)
    if outcome.table_note:
        print()
        print(outcome.table_note)
    print()
    print(f"results:     {outcome.results_path}")
    print(f"tensorboard: tensorboard --logdir {outcome.experiment_dir}")
    print(f"predictions: {outcome.experiment_dir / 'predictions'}")
    for note in outcome.notes:
        print(note)
    if outcome.errors:
        print(f"{len(outcome.errors)} trial(s) failed:", file=sys.stderr)
        for path, err in outcome.errors.items():
            print(f"  {path}: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_cache_build(args: argparse.Namespace) -> int:
    from trainables.config import TrialConfig
    from trainables.data import check_sources
    from trainables.models import prepare_model
    from tuner.storage import check_storage
    from tuner.sweep import CACHE_DIRNAME, CacheBuildFailed, build_caches, default_storage, init_ray

    spec = load_spec(args.preset, args.overrides, args.name)
    storage = Path(args.storage or default_storage()).expanduser().resolve()
    root = Path(spec.teacher.cache_dir).expanduser() if spec.teacher.cache_dir else storage / CACHE_DIRNAME
    check_storage(root)
    init_ray()
    prepare_model(spec.model, sys.stdout)
    check_sources(TrialConfig(model=spec.model, data=spec.data, eval=spec.eval))
    try:
        built = build_caches(spec, root, sys.stdout)
    except CacheBuildFailed as err:  # each failure was printed with its reason as it happened
        print(f"error: {err}", file=sys.stderr)
        return 1
    for mode, path in built.items():
        print(f"{mode}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command; user mistakes exit 2 with one line on stderr."""
    from trainables.models import ModelUnavailable
    from trainables.tasks.loaders.errors import DataUnavailable
    from tuner.storage import StorageError

    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            return _cmd_presets()
        if args.command == "show":
            return _cmd_show(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "cache":
            return _cmd_cache_build(args)
    except (SpecError, ModelUnavailable, DataUnavailable, StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # validation inside policies/tasks before any trial runs
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    return 2

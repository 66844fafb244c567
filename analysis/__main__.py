"""`python -m analysis report DIR [DIR ...]`: write a sweep's report and print its path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.errors import AnalysisError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description="Tables, intervals and plots of lamtune sweeps.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="write a report (all tables and plots) of one or several experiments")
    r.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="experiment directory (or its results.parquet)")
    r.add_argument("--format", choices=("md", "html"), default="md", help="report page format (default md)")
    r.add_argument("--out", type=Path, help="output folder (default: <first DIR>/report)")
    r.add_argument("--split", choices=("test", "dev"), default="test", help="evaluation split (default test)")
    r.add_argument("--baseline", default="sft", help="label every Δ is taken against (default sft)")
    r.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    r.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    r.add_argument("--link-images", action="store_true", help="html: link the PNGs instead of inlining them")
    r.add_argument("--no-plots", action="store_true", help="tables only (no figures)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command; bad input exits 2 with one line on stderr."""
    args = _parser().parse_args(argv)
    from analysis.report import write_report

    try:
        page = write_report(args.dirs, args.out, args.format, n_boot=args.n_boot, seed=args.seed, split=args.split,
                            baseline=args.baseline, level=args.level, inline_images=not args.link_images,
                            figures=not args.no_plots)
    except AnalysisError as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())

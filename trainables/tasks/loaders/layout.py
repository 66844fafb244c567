"""Where each file lives in a local folder laid out as XTREME's download script leaves it."""

from __future__ import annotations

from pathlib import Path

from trainables.tasks.loaders.errors import DataUnavailable


def split_file(root: Path, folder: str, split: str, lang: str, hint: str = "") -> Path:
    """`<root>/<folder>/<split>-<lang>.tsv`, or DataUnavailable naming the missing file."""
    path = root / folder / f"{split}-{lang}.tsv"
    if not path.is_file():
        raise DataUnavailable(f"data.source=local:{root}: missing file {path}{'; ' + hint if hint else ''}")
    return path


def find_unique(root: Path, folder: str, pattern: str) -> Path | None:
    """The one file matching `pattern` anywhere under `<root>/<folder>`, None if none does."""
    base = root / folder
    found = sorted(p for p in base.rglob(pattern) if p.is_file()) if base.is_dir() else []
    if len(found) > 1:
        shown = ", ".join(str(p) for p in found[:3])
        raise DataUnavailable(f"data.source=local:{root}: {len(found)} files match {folder}/**/{pattern} "
                              f"({shown}); keep one")
    return found[0] if found else None

"""Where lamtune keeps the models it builds itself (the tiny default, `random:` shapes) and how a
build is put in place: once, atomically, whichever of several concurrent builders finishes first."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


class ModelUnavailable(RuntimeError):
    """A model or tokenizer could not be loaded (one line, names the alternatives)."""


def lamtune_home() -> Path:
    """Directory for lamtune's on-disk artifacts (built models): $LAMTUNE_HOME or ~/.cache/lamtune."""
    return Path(os.environ.get("LAMTUNE_HOME", Path.home() / ".cache" / "lamtune"))


def install_once(target: Path, build: Callable[[Path], Any]) -> Path:
    """`target`, built by `build(tmp)` in a temporary sibling folder and renamed into place unless there."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)  # atomic: a concurrent builder's result wins, ours is dropped
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

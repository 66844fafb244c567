"""A sweep's tokenised data, prepared by its first trial and read back by the others.

Every trial of a sweep shares its data, evaluation sizes and tokenizer, so the evaluation items
and training examples are the same lists in each: loading the files and tokenising ~8,000 prompts
took 3–9 s per trial on the GPU machine (study run 11), a few hundred milliseconds to unpickle.
The files live in `<experiment_dir>/prepared/`, named by a hash of everything that shapes them;
two trials that start together may both build one, and the second rename wins (same content).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from trainables.config import TrialConfig

T = TypeVar("T")

#: Bumped when what the builders produce changes for the same configuration.
PREPARED_VERSION = 1


def prepared_key(cfg: TrialConfig, tokenizer: Any, what: str) -> str:
    """The file stem of `what` (e.g. 'eval-dev') prepared under this trial's data, evaluation sizes and tokenizer."""
    shaping = {
        "version": PREPARED_VERSION,
        "what": what,
        "data": cfg.data.model_dump(mode="json"),
        "eval": cfg.eval.model_dump(mode="json", include={"test_split", "dev_per_pair", "test_per_pair"}),
        "model": cfg.model.model_dump(mode="json", include={"name", "revision", "tiny", "random"}),
        "tokenizer": [type(tokenizer).__name__, len(tokenizer), getattr(tokenizer, "chat_template", None),
                      getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)],
    }
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{what}-{digest}"


def prepared(cfg: TrialConfig, tokenizer: Any, what: str, build: Callable[[], T]) -> T:
    """`build()`'s result, read from the experiment's prepared files when a trial built it before
    (built and stored otherwise; without an experiment directory, just built)."""
    if not cfg.experiment_dir:
        return build()
    path = Path(cfg.experiment_dir) / "prepared" / f"{prepared_key(cfg, tokenizer, what)}.pkl"
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError):
        pass  # not there yet (or a torn file from a killed writer): build it
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)  # a full or read-only disk costs the next trial a rebuild, nothing else
    return value

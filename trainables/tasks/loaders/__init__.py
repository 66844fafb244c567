"""Real XTREME data for the five tasks, from a local folder or the Hugging Face hub.

`load_split(source, task, lang, split)` returns records in exactly the shapes of
`trainables/tasks/schema.py`, with stable unique ids (`<task>-<lang>-<split>-<n>`; QA keeps the
dataset's question id as `<n>`). Sources:

* `local:<dir>` — the layout XTREME's download script leaves (see docs/data.md);
* `hub` — `datasets.load_dataset` (google/xtreme; English training sets as the seed study used).

One module per task (xnli, pawsx, mlqa, panx, udpos). A pair the real dataset lacks (PAWS-X has no
Hindi, MLQA no French) and any file or split that is not there raise DataUnavailable; a file that
does not parse raises DataFormatError naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from trainables.tasks.loaders import mlqa, panx, pawsx, udpos, xnli
from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable
from trainables.tasks.loaders.naming import LANG_NAMES
from trainables.tasks.schema import LANGS, SPLITS, TASKS, XTREME_LANGS, Record

#: The XTREME dataset behind each task.
DATASETS: dict[str, str] = {"nli": "XNLI", "pa": "PAWS-X", "qa": "MLQA", "ner": "PAN-X", "pos": "UDPOS"}

_MODULES: dict[str, ModuleType] = {"nli": xnli, "pa": pawsx, "qa": mlqa, "ner": panx, "pos": udpos}


def missing_reason(task: str, lang: str) -> str | None:
    """Why real XTREME has no `lang` for `task` (e.g. 'PAWS-X has no Hindi'), None when it has it."""
    if lang in XTREME_LANGS[task]:
        return None
    return f"{DATASETS[task]} has no {LANG_NAMES.get(lang, lang)}"


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def load_split(source: str, task: str, lang: str, split: str) -> list[Record]:
    """All records of one task, language and split from `hub` or `local:<dir>`."""
    _check("task", task, TASKS)
    _check("language", lang, LANGS)
    _check("split", split, SPLITS)
    if reason := missing_reason(task, lang):
        raise DataUnavailable(f"{task} {lang}: {reason} (evaluation skips this pair)")
    module = _MODULES[task]
    if source == "hub":
        return module.load_hub(lang, split)
    if source.startswith("local:") and len(source) > len("local:"):
        root = Path(source[len("local:"):]).expanduser()
        if not root.is_dir():
            raise DataUnavailable(f"data.source={source}: {root} is not a directory")
        return module.load_local(root, lang, split)
    raise ValueError(f"data.source must be 'hub' or 'local:<dir>' for real data, got {source!r}")


__all__ = ["DATASETS", "DataFormatError", "DataUnavailable", "load_split", "missing_reason"]

"""Hugging Face datasets for `data.source=hub`: one split of one config, and its label names.

Any failure to get the data (no network, offline mode, an unknown config or split) becomes one
DataUnavailable line that names the dataset and says what to use instead.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from trainables.tasks.loaders.errors import DataFormatError, DataUnavailable

#: XTREME on the hub: configs XNLI, PAWS-X.<lang>, MLQA.<lang>.<lang>, PAN-X.<lang>, udpos.<Language>.
XTREME = "google/xtreme"

#: Our split names → the datasets' split names.
HUB_SPLITS: dict[str, str] = {"train": "train", "dev": "validation", "test": "test"}

_ALTERNATIVES = "use data.source=local:<dir> (XTREME download layout) or data.source=synthetic"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the hub clients' retry chatter, so a failure is one line, not twenty."""
    names = ("huggingface_hub", "datasets", "fsspec", "urllib3")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_hub_split(path: str, name: str | None, split: str) -> Any:
    """One split (train | dev | test) of a hub dataset config, as a `datasets.Dataset`."""
    import datasets

    what = f"{path} {name}" if name else path
    try:
        with _quiet():
            return datasets.load_dataset(path, name, split=HUB_SPLITS[split])
    except ConnectionError as err:
        raise DataUnavailable(f"data.source=hub: cannot reach the Hugging Face hub for {what} "
                              f"({type(err).__name__}); {_ALTERNATIVES}") from None
    except Exception as err:  # noqa: BLE001 — every other failure is reported the same way, in one line
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise DataUnavailable(f"data.source=hub: cannot load {what} split {HUB_SPLITS[split]!r} "
                              f"({type(err).__name__}: {detail}); {_ALTERNATIVES}") from None


def label_names(dataset: Any, column: str) -> tuple[str, ...] | None:
    """The ClassLabel names of `column` (or of its items, for a sequence column); None for plain values."""
    feature = dataset.features[column]
    feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) / List(ClassLabel)
    names = getattr(feature, "names", None)
    return tuple(names) if names else None


def column(dataset: Any, name: str) -> list[Any]:
    """A whole column as a Python list."""
    return list(dataset[name])


def tag_strings(values: list, names: tuple[str, ...], allowed: tuple[str, ...], at: str) -> list[str]:
    """Tags as strings: ClassLabel ids mapped through `names`, then checked against `allowed`."""
    tags = [names[v] if isinstance(v, int) else str(v) for v in values]
    bad = [t for t in tags if t not in allowed]
    if bad:
        raise DataFormatError(f"{at}: unknown tag {bad[0]!r}; allowed: {', '.join(allowed)}")
    return tags


def tagged_sentences(config: str, split: str, tag_column: str, tagset: tuple[str, ...]) -> list[tuple[list[str], list[str]]]:
    """(tokens, tag strings) per sentence of a google/xtreme token-tagging config (PAN-X, udpos)."""
    ds = load_hub_split(XTREME, config, split)
    names = label_names(ds, tag_column) or tagset
    at = f"{XTREME} {config} {split} row"
    return [(list(toks), tag_strings(list(tags), names, tagset, f"{at} {i}"))
            for i, (toks, tags) in enumerate(zip(column(ds, "tokens"), column(ds, tag_column)))]

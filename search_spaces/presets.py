"""The shipped sweep presets: YAML files in search_spaces/presets/, one per experiment of the study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of preset `name` (ValueError naming the available presets if unknown)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return path


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file (ValueError with the file name when it is not a mapping)."""
    try:
        # libyaml when present: the pure-Python parser costs ~7 ms per preset.
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the sweep file ({err.strerror or type(err).__name__})"
                         if isinstance(err, OSError) else f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep file must be a YAML mapping")
    return data


def describe(name: str) -> str:
    """The first line of a preset's description."""
    text = str(read_yaml(preset_path(name)).get("description") or "").strip()
    return text.splitlines()[0] if text else ""

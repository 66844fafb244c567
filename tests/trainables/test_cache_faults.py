"""Teacher-cache faults: a damaged cache is never used silently, a killed build's leftovers are
replaced, and two builders of the same cache at once build it once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainables.test_loop_policies import base_config
from trainables.teacher import build
from trainables.teacher.build import build_cache, cache_dir, cache_problem
from trainables.teacher.cache import MANIFEST, CacheError, TeacherCache


@pytest.fixture(scope="module")
def sound(tmp_path_factory, tiny_dir) -> Path:
    """A complete few-shot cache, built once; tests work on copies of it."""
    return build_cache(base_config(""), tmp_path_factory.mktemp("sound"), "fewshot")


def _copy(sound: Path, root: Path) -> Path:
    target = cache_dir(base_config(""), root, "fewshot")
    shutil.copytree(sound, target)
    return target


def _shard(cache: Path) -> Path:
    return cache / json.loads((cache / MANIFEST).read_text())["tasks"]["nli"]["file"]


def _damage(kind: str, cache: Path) -> None:
    shard = _shard(cache)
    data = bytearray(shard.read_bytes())
    if kind == "flipped":
        data[len(data) // 2] ^= 0x5A
        shard.write_bytes(bytes(data))
    elif kind == "truncated":
        shard.write_bytes(bytes(data[: len(data) // 3]))
    elif kind == "missing":
        shard.unlink()


@pytest.mark.parametrize("kind,message", [("flipped", "does not match its checksum"),
                                          ("truncated", "does not match its checksum"),
                                          ("missing", "is missing")])
def test_a_damaged_cache_is_refused_naming_the_file_then_rebuilt(tmp_path, sound, kind, message):
    cache = _copy(sound, tmp_path)
    _damage(kind, cache)
    with pytest.raises(CacheError, match=message) as err:
        TeacherCache(cache)
    assert str(_shard(cache)) in str(err.value) and "\n" not in str(err.value)
    assert message in cache_problem(cache)
    # The build replaces it: the rebuilt cache is sound and holds the same numbers as the original.
    assert build_cache(base_config(""), tmp_path, "fewshot") == cache
    assert cache_problem(cache) is None
    assert _shard(cache).read_bytes() == _shard(sound).read_bytes()


def test_a_killed_builds_half_written_folder_is_replaced(tmp_path, sound):
    cache = _copy(sound, tmp_path)
    (cache / MANIFEST).unlink()  # a build killed before its manifest (the completion mark)
    leftover = cache.with_name(cache.name + ".partial-deadbeef")
    leftover.mkdir()
    (leftover / "nli.arrow").write_bytes(b"half")
    assert cache_problem(cache) == "incomplete"
    with pytest.raises(CacheError, match="no complete teacher cache"):
        TeacherCache(cache)
    build_cache(base_config(""), tmp_path, "fewshot")
    assert cache_problem(cache) is None and not leftover.exists()


#: A builder process: build_cache, appending a line to the counter file for each real build.
BUILDER = """
import sys
from tests.trainables.test_loop_policies import base_config
from trainables.teacher import build
real = build._build_into
def counting(*args, **kwargs):
    with open(sys.argv[2], "a") as f:
        f.write("built\\n")
    return real(*args, **kwargs)
build._build_into = counting
print(build.build_cache(base_config(""), sys.argv[1], "fewshot"))
"""


def test_two_builders_at_once_build_the_cache_once(tmp_path, tiny_dir):
    counter, root = tmp_path / "builds.txt", tmp_path / "root"
    repo = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(root), str(counter)], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    dirs = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(dirs) == 1
    assert counter.read_text().splitlines() == ["built"]
    assert cache_problem(Path(dirs.pop())) is None
    assert not list(root.glob("*.partial-*"))

"""The sweep's teacher-cache builds run beside its trials (`tuner.sweep.CacheBuilds`): a build that
ends prints its ready line; one that fails writes its one-line reason where waiting trials read it,
prints it, and `wait` raises it; the CLI's `cache build` exits 1 with it."""

from __future__ import annotations

import io

import pytest

from trainables.teacher.cache import MANIFEST, failed_marker


def _ok(path: str) -> str:
    from pathlib import Path

    Path(path).mkdir(parents=True)
    (Path(path) / MANIFEST).write_text("{}")
    return path


def _boom() -> None:
    raise MemoryError("the teacher did not fit")


def test_builds_report_ready_and_failed_and_mark_the_failure(ray_session, tmp_path):
    from tuner.sweep import CacheBuildFailed, CacheBuilds

    ray = ray_session
    paths = {"fewshot": str(tmp_path / "fewshot-1"), "zeroshot": str(tmp_path / "zeroshot-1"),
             "checkpoint": str(tmp_path / "checkpoint-1")}
    pending = {("fewshot", "zeroshot"): ray.remote(max_calls=1)(_ok).remote(paths["fewshot"]),
               ("checkpoint",): ray.remote(max_calls=1)(_boom).remote()}
    out = io.StringIO()
    builds = CacheBuilds(paths, pending, out)
    with pytest.raises(CacheBuildFailed) as err:
        builds.wait()
    assert "teacher cache [checkpoint]" in str(err.value) and "the teacher did not fit" in str(err.value)
    lines = out.getvalue().splitlines()
    assert any(ln.startswith("teacher cache [fewshot] ready") for ln in lines)
    assert any(ln.startswith("teacher cache [zeroshot] ready") for ln in lines)
    failed = [ln for ln in lines if ln.startswith("teacher cache [checkpoint] FAILED: ")]
    assert len(failed) == 1 and "the teacher did not fit" in failed[0]
    marker = failed_marker(paths["checkpoint"])
    assert marker.is_file() and "the teacher did not fit" in marker.read_text()
    assert not failed_marker(paths["fewshot"]).exists()


def test_builds_that_all_succeed_return_their_paths(ray_session, tmp_path):
    from tuner.sweep import CacheBuilds

    ray = ray_session
    paths = {"fewshot": str(tmp_path / "fewshot-2")}
    builds = CacheBuilds(paths, {("fewshot",): ray.remote(max_calls=1)(_ok).remote(paths["fewshot"])}, io.StringIO())
    assert builds.wait() == paths
    assert CacheBuilds({}, {}, io.StringIO()).wait() == {}

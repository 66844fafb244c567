"""A trial that starts while its sweep still builds the teacher cache waits for it
(`trainables.teacher.cache.wait_for_cache`): at once when the cache is there, until its manifest
appears (the cache is renamed into place whole), and with a one-line CacheError when the sweep
marked the build failed or the wait runs out."""

from __future__ import annotations

import threading
import time

import pytest

from trainables.teacher.cache import MANIFEST, CacheError, failed_marker, wait_for_cache


def test_a_built_cache_is_not_waited_for(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / MANIFEST).write_text("{}")
    assert wait_for_cache(tmp_path / "c", timeout_s=1) == 0.0


def test_the_wait_ends_when_the_cache_is_put_in_place(tmp_path):
    target = tmp_path / "c"

    def build() -> None:
        time.sleep(0.4)
        partial = tmp_path / "c.partial-1"
        partial.mkdir()
        (partial / MANIFEST).write_text("{}")
        partial.rename(target)

    threading.Thread(target=build).start()
    waited = wait_for_cache(target, timeout_s=30, poll_s=0.05)
    assert 0.3 < waited < 10 and (target / MANIFEST).is_file()


def test_a_failed_build_ends_the_wait_with_its_reason(tmp_path):
    target = tmp_path / "fewshot-abc"
    assert failed_marker(target) == tmp_path / ".fewshot-abc.failed"

    def fail() -> None:
        time.sleep(0.2)
        failed_marker(target).write_text("OutOfMemoryError: CUDA out of memory\n")

    threading.Thread(target=fail).start()
    with pytest.raises(CacheError) as err:
        wait_for_cache(target, timeout_s=30, poll_s=0.05)
    assert str(err.value) == "teacher cache fewshot-abc could not be built: OutOfMemoryError: CUDA out of memory"


def test_the_wait_is_bounded_by_teacher_wait_s(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(CacheError, match=r"not built after 0s \(teacher.wait_s\)"):
        wait_for_cache(tmp_path / "never", timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - t0 < 5


def test_wait_s_has_a_range():
    from trainables.config import TeacherConfig

    assert TeacherConfig().wait_s == 6 * 3600
    with pytest.raises(ValueError, match="wait_s"):
        TeacherConfig(wait_s=0)

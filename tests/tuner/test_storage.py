"""A storage folder that cannot take the sweep's results stops the sweep before anything starts."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple

import pytest

from tuner import cli, storage
from tuner.storage import StorageError, check_storage

Usage = namedtuple("Usage", "total used free")


def test_a_writable_folder_with_room_passes_and_is_left_clean(tmp_path):
    check_storage(tmp_path / "new" / "sweeps")
    assert list((tmp_path / "new" / "sweeps").iterdir()) == []


def test_a_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match=r"--storage .*/f/sweeps: not writable \(Not a directory\)") as err:
        check_storage(tmp_path / "f" / "sweeps")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only-mode folders")
def test_a_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="not writable"):
            check_storage(ro)
    finally:
        ro.chmod(0o755)


def test_a_read_only_file_system_is_refused(tmp_path, monkeypatch):
    """EROFS from the kernel (a read-only mount), as os.open raises it."""
    def erofs(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(storage.os, "open", erofs)
    with pytest.raises(StorageError, match=r"not writable \(Read-only file system\)"):
        check_storage(tmp_path)


def test_a_full_disk_is_refused_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: Usage(10 << 30, (10 << 30) - (5 << 20), 5 << 20))
    with pytest.raises(StorageError, match="only 5 MiB free, a sweep needs at least 1024 MiB"):
        check_storage(tmp_path)


def test_the_cli_exits_2_before_writing_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 1 << 20))
    target = tmp_path / "sweeps"
    code = cli.main(["sweep", "smoke", "--storage", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --storage") and err.count("\n") == 1
    assert list(target.iterdir()) == []  # no experiment folder, no cache, no Ray state
    shutil.rmtree(target)

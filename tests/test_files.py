"""Atomic writes: a write that fails half-way leaves the previous good file as it was."""

import errno
import json
import os

import pytest

from keras_tlft._files import atomic_path, atomic_write


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"good": true}\n')
    with pytest.raises(OSError, match="No space"), atomic_write(path) as f:
        f.write('{"half": ')
        f.flush()
        _disk_full()
    assert path.read_text() == '{"good": true}\n'
    assert os.listdir(tmp_path) == ["result.json"]  # no temporary file left


def test_successful_write_replaces_with_usual_permissions(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path, "wb") as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_keeps_the_suffix_and_cleans_up(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_path(path, suffix=".weights.h5") as tmp:
        assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"torn")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["model.weights.h5"]


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Received: mode='a'"), atomic_write(tmp_path / "x", "a"):
        pass


def test_schedule_save_failing_midway_keeps_the_old_schedule(tmp_path, monkeypatch):
    from keras_tlft import schedule as schedule_module
    from keras_tlft.schedule import Schedule

    path = tmp_path / "schedule.json"
    good = Schedule.from_json({"stages": {"0": 0, "2": 1}})
    good.save(path)
    before = path.read_text()

    def half_then_full(doc, f, **kwargs):
        f.write(json.dumps(doc)[:5])
        _disk_full()

    monkeypatch.setattr(schedule_module.json, "dump", half_then_full)
    with pytest.raises(OSError, match="No space"):
        Schedule.from_json({"stages": {"0": 0, "1": 2}}).save(path)
    assert path.read_text() == before
    assert Schedule.load(path) == good
    assert os.listdir(tmp_path) == ["schedule.json"]

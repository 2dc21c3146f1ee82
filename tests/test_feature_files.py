"""Feature files of killed fit_frozen runs: found and removed by the next run, never one that a
live process is using. The writers are real processes, one of them SIGKILLed."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from keras_tlft.feature_store import FeatureStore, remove_stale_feature_files

# A process that spills features to disk (budget 0) as fit_frozen's store does, then waits.
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from keras_tlft.feature_store import FeatureStore
    store = FeatureStore(0, sys.argv[1], batches=4)
    store.append(np.ones((2, 3), "float32"))
    print(store.path, flush=True)
    time.sleep(120)
""")


def _writer(directory) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)],
                            stdout=subprocess.PIPE, text=True)
    path = proc.stdout.readline().strip()
    assert path and os.path.exists(path), path
    return proc, path


def test_killed_runs_file_is_removed_and_a_live_ones_kept(tmp_path):
    killed, killed_path = _writer(tmp_path)
    live, live_path = _writer(tmp_path)
    try:
        assert os.path.basename(killed_path).startswith("tlft-features-")
        assert f"-{killed.pid}-" in os.path.basename(killed_path)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert os.path.exists(killed_path)  # a kill leaves it behind...
        other = tmp_path / "notes.bin"
        other.write_bytes(b"not ours")
        removed = remove_stale_feature_files(tmp_path)  # ...the next run finds it
        assert removed == [killed_path]
        assert not os.path.exists(killed_path)
        assert os.path.exists(live_path) and other.exists()
    finally:
        live.kill()
        live.wait(timeout=30)
    assert remove_stale_feature_files(tmp_path) == [live_path]


def test_a_locked_file_is_kept_even_if_its_pid_is_gone(tmp_path):
    # A reused or foreign pid must not be enough: the lock of the process reading it decides.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    name = tmp_path / f"tlft-features-{_host()}-{proc.pid}-abc.bin"
    name.write_bytes(b"x")
    fd = os.open(name, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_stale_feature_files(tmp_path) == []
    finally:
        os.close(fd)
    assert remove_stale_feature_files(tmp_path) == [str(name)]


def test_own_store_holds_its_file_until_close(tmp_path):
    store = FeatureStore(0, tmp_path, batches=2)
    store.append(np.ones((2, 3), "float32"))
    features = store.result()
    assert f"-{os.getpid()}-" in os.path.basename(store.path)
    assert remove_stale_feature_files(tmp_path) == []
    np.testing.assert_array_equal(features, np.ones((2, 3)))
    store.close()
    assert os.listdir(tmp_path) == []


def _host() -> str:
    from keras_tlft.feature_store import _host

    return _host()


def test_fit_frozen_removes_a_killed_runs_files(tmp_path):
    import keras

    from keras_tlft import fit_frozen

    killed, killed_path = _writer(tmp_path)
    killed.kill()
    killed.wait(timeout=30)
    inputs = keras.Input((4,))
    backbone = keras.Sequential([keras.layers.Dense(3)], name="backbone")
    backbone.trainable = False
    model = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
    fit_frozen(model, x, y, epochs=1, batch_size=4, cache=str(tmp_path), verbose=0)
    assert not os.path.exists(killed_path)
    assert os.listdir(tmp_path) == []

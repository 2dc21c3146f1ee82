import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts with fresh Keras name counters and state.

    Without a full garbage collection per test (``free_memory=False``): Keras's own
    ``gc.collect()`` costs about half a second once TensorFlow is loaded, which over the suite is
    minutes; the last test's models are freed by reference counting and Python's automatic
    collections.
    """
    yield
    import sys

    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session(free_memory=False)


# The end-to-end modules: the CLI in subprocesses, plugin projects installed and checked, and
# every registered architecture built. `pytest -q -m "not slow and not heavy and not e2e"` is
# the fast tier for daily work (CONTRIBUTING.md, "Tests"); the default run includes them.
E2E_MODULES = {
    "test_applications_plugin.py", "test_bench.py", "test_cli.py", "test_cli_input.py",
    "test_cli_lr_find.py", "test_efficientnet_lite_plugin.py", "test_example_plugin.py",
    "test_keras_cv_plugin.py", "test_keras_hub_plugin.py", "test_local.py",
    "test_plugin_names.py", "test_plugin_platform.py", "test_recognition.py", "test_testing.py",
    "test_vit_blocks.py", "test_without_tensorflow.py",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end-to-end (CLI subprocesses, plugin projects, real architectures); "
                   "in the default run, left out of the fast tier")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)

import gc

import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts with fresh Keras name counters and frees the last test's models."""
    yield
    import sys

    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session()
    gc.collect()

"""What every verb of the CLI shares: exit codes, bad-input errors, argument types, figure
tables, and importing Keras quietly."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ValueError):
    """Bad input on the command line."""


def _fmt_int(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def print_figures(out: Console, table: Table) -> None:
    """Print a table of figures at its natural width: never cut to fit a narrow terminal or a
    pipe's default 80 columns (a too-narrow terminal wraps the lines instead)."""
    natural = Measurement.get(out, out.options.update(max_width=1000), table).maximum
    width, out.width = out.width, max(out.width, natural)
    try:
        out.print(table)
    finally:
        out.width = width


def _quiet_tensorflow() -> None:
    """Import Keras with TensorFlow's C++ start-up chatter (oneDNN, CUDA probes) kept off stderr.

    Those lines are written by C++ before any Python logging setting applies, so the only way to
    keep a CLI's stderr readable is to point file descriptor 2 elsewhere while importing.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules or os.environ.get("KERAS_TLFT_DEBUG_IMPORT"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras

        keras.ops.zeros((1,))  # the backend's device probe happens on first use
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _print_json(doc) -> int:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return EXIT_OK


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return int(text)


def _learning_rate(text: str) -> float:
    """``--learning-rate``: checked as the Python API checks every learning rate."""
    from keras_tlft.checks import check_number

    try:
        value = float(text)
    except ValueError:
        value = text
    try:
        check_number("--learning-rate", value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


# --- sizes, refused before anything is built ---------------------------------------------------

# More steps than this is a typo: a median step time is stable after a few dozen, and a range
# test of 100,000 steps already takes hours.
MAX_STEPS = 100_000


def check_steps(option: str, steps) -> None:
    """Refuse a step count above :data:`MAX_STEPS`."""
    if steps is not None and steps > MAX_STEPS:
        raise UsageError(f"{option} must be at most {MAX_STEPS:,}: more steps measure nothing "
                         f"new and take hours. Received: {option}={steps}")


# Training keeps every activation for the backward pass, and a backbone's activations are many
# times its input (MobileNetV2's first convolution alone outputs 32 channels at half the
# resolution: 2.7 times the input). 16 input-sized buffers per image is a floor, not an estimate.
ACTIVATION_FACTOR = 16


def check_batch_memory(option: str, batch_size: int, shape, data_batches: int = 0,
                       received: str | None = None) -> None:
    """Refuse a batch that cannot fit: the images as float32 times :data:`ACTIVATION_FACTOR`
    (plus ``data_batches`` batches of data the verb makes itself) above the memory available.
    Such a run would only die of memory after seconds of building."""
    from keras_tlft.feature_store import available_memory

    pixels = 1
    for d in shape:
        pixels *= int(d)
    needed = 4 * pixels * batch_size * (ACTIVATION_FACTOR + data_batches)
    available = available_memory()
    if needed > available:
        raise UsageError(
            f"A batch of {batch_size:,} images of {_shape(shape)} needs at least "
            f"{needed / 2**30:,.1f} GiB (the images as float32, times {ACTIVATION_FACTOR} for the "
            f"activations), more than the {available / 2**30:,.1f} GiB of memory available: "
            f"lower {option}. Received: {received or f'{option}={batch_size}'}")

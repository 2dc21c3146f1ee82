"""What every verb of the CLI shares: exit codes, bad-input errors, argument types, the
consoles (control characters stripped), tables fitted to the terminal's width, and importing
Keras quietly."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterable

from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table

from keras_tlft.checks import CONTROLS as _CONTROLS
from keras_tlft.checks import strip_controls

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `ls | head -1`


class UsageError(ValueError):
    """Bad input on the command line."""


def _fmt_int(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


class _SafeConsole(Console):
    """A rich console that strips control characters from every string it is given, before
    layout (so widths are right), and from the text of every segment it renders (text built
    otherwise). Styles are rich's own, applied afterwards; cursor-control segments are rich's."""

    def render_str(self, text: str, **kwargs):
        return super().render_str(strip_controls(text), **kwargs)

    def render(self, renderable, options=None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not _CONTROLS.search(segment.text):
                yield segment
            else:
                yield Segment(strip_controls(segment.text), segment.style)


def make_console(stderr: bool = False) -> Console:
    """The CLI's console for people (stdout) or for messages (``stderr=True``)."""
    return _SafeConsole(stderr=stderr, highlight=False, emoji=False)


def natural_width(out: Console, renderable) -> int:
    """The width ``renderable`` takes when nothing is cut or wrapped."""
    return Measurement.get(out, out.options.update(max_width=1000), renderable).maximum


def fit_columns(width: int, columns: list[str], drop: Iterable[str],
                measure: Callable[[list[str]], int]) -> list[str]:
    """The columns to show in ``width``: ``columns`` less those of ``drop`` (least useful first)
    until ``measure(kept)`` fits. Names a user types are never in ``drop``, so when even the
    remaining columns are too wide they are printed whole, wider than ``width``."""
    kept = list(columns)
    for name in drop:
        if measure(kept) <= width:
            break
        if name in kept:
            kept.remove(name)
    return kept


def print_fitted(out: Console, make: Callable[[list[str]], Table], columns: list[str],
                 drop: Iterable[str]) -> list[str]:
    """Print the table ``make(columns)`` with columns of ``drop`` left out (least useful first)
    until it fits the console; say which were left out. Returns the columns left out."""
    kept = fit_columns(out.width, columns, drop, lambda cols: natural_width(out, make(cols)))
    print_figures(out, make(kept))
    left_out = [c for c in columns if c not in kept]
    if left_out:
        out.print(f"[dim]left out to fit {out.width} columns: {', '.join(left_out)} "
                  "(a wider terminal or --json shows them)[/dim]")
    return left_out


def print_rows(out: Console, rows: list[dict[str, str]], columns: list[str],
               drop: Iterable[str], right: Iterable[str] = (), **table_options) -> list[str]:
    """Print ``rows`` (each a dict of rich-markup cells by column; untrusted text escaped) as a
    table whose cells never wrap, with columns of ``drop`` left out, least useful first, until it
    fits the console (see :func:`print_fitted`). Returns the columns left out."""
    right = set(right)

    def make(kept):
        table = Table(**table_options)
        for col in kept:
            table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
        for row in rows:
            table.add_row(*(row[c] for c in kept))
        return table

    return print_fitted(out, make, columns, drop)


def print_figures(out: Console, table: Table) -> None:
    """Print a table of figures at its natural width: never cut to fit a narrow terminal or a
    pipe's default 80 columns (a too-narrow terminal wraps the lines instead)."""
    natural = natural_width(out, table)
    width, out.width = out.width, max(out.width, natural)
    try:
        out.print(table)
    finally:
        out.width = width


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` text: a description's paragraphs (separated by a blank line) each filled to
    the terminal's width; the examples (an epilog starting ``examples:``) kept line by line."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                          subsequent_indent=indent) for p in text.split("\n\n"))


def _examples(*lines: str) -> str:
    """An epilog of example commands; one longer than 78 columns goes on with `` \\`` lines."""
    return "examples:\n" + "\n".join(f"  {line}".replace("\n", "\n  ") for line in lines)


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
    from keras_tlft.training.feature_store import available_memory

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

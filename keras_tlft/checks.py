"""The checks of plain values that schedules, presets, plans, recipes, early stopping and the CLI
share, the shape of their error messages (``... Received: name=value``), and text that did not
come from us made safe for a terminal (:func:`strip_controls`).

Plain data: imports neither Keras nor pluggy.
"""

from __future__ import annotations

import math
import os
import re
import stat
from typing import Any

__all__ = ["check_choice", "check_number", "check_regular_file", "received",
           "regular_file_problem", "strip_controls"]


def received(name: str, value: Any) -> str:
    """The last sentence of an error message: ``"Received: name=value"``."""
    return f"Received: {name}={value!r}"


def check_number(name, value, low=0.0, allow_none=False, allow_low=False, integer=False):
    """Raise ``ValueError`` unless ``value`` is a finite number (an integer with ``integer``)
    above ``low`` (or equal to it, with ``allow_low``), or ``None`` with ``allow_none``.

    The one check of every number a schedule takes, wherever it comes from: Python arguments,
    preset strings, JSON files and the command line (``keras-tlft inspect --learning-rate``).
    """
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= low if allow_low else value > low)
    if not ok:
        what = "an integer" if integer else "a finite number"
        bound = f">= {low:g}" if allow_low else f"> {low:g}"
        none = " or None" if allow_none else ""
        raise ValueError(f"Invalid {name}: expected {what} {bound}{none}. {received(name, value)}")


def check_choice(name: str, value, choices: tuple) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"Invalid {name}: expected one of {choices}. {received(name, value)}")


def check_regular_file(name: str, path, what: str = "File") -> None:
    """Raise ``ValueError`` unless ``path`` is an existing regular file (or a link to one),
    saying what the path is instead (see :func:`regular_file_problem`)."""
    text = os.fspath(path)
    problem = regular_file_problem(text)
    if problem is not None:
        raise ValueError(f"{what} {text!r} {problem}: expected the path of a regular file. "
                         f"{received(name, text)}")


def regular_file_problem(path) -> str | None:
    """What keeps ``path`` from being a regular file (``"does not exist"``, ``"is a
    directory"``, ``"is not a regular file (it is a FIFO)"``...), or ``None`` when it is one.

    Only ``stat`` is called, so a FIFO is never opened (opening one for reading blocks until
    something writes to it).
    """
    try:
        mode = os.stat(os.fspath(path)).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return "is a directory" if stat.S_ISDIR(mode) else (
        f"is not a regular file (it is a {_file_kind(mode)})")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"))
    return next((kind for test, kind in kinds if test(mode)), "special file")


# Escape sequences (CSI such as clear-screen, OSC such as set-window-title, DCS/SOS/PM/APC
# strings, two-character ones), then any other C0/C1 control but tab and newline, DEL, and the
# bidirectional overrides that make a name read differently from what it is.
CONTROLS = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)


def strip_controls(text: str) -> str:
    """``text`` without terminal control sequences and characters (tab and newline kept).

    Names from an untrusted ``.keras`` file, a plugin's names, descriptions and error messages
    reach the terminal: an OSC sequence in a layer name would retitle the window, a CSI one clear
    the screen. Every console of the CLI applies this to all it prints
    (``keras_tlft.cli._common.make_console``), and so do the warnings about plugins: only our own
    styling reaches the terminal as escape sequences.
    """
    return CONTROLS.sub("", text)

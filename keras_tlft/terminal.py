"""Text for a terminal: what did not come from us is shown without control sequences."""

from __future__ import annotations

import re

__all__ = ["strip_controls"]

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

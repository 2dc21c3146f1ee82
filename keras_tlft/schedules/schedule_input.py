"""Reading a schedule from what users write: a mapping ``{epoch: unfreeze}``, the JSON form, a
list of stages, a preset string, or the path of a JSON file (:func:`parse_schedule`).

The :class:`~keras_tlft.schedule.Schedule` it returns is plain data (:mod:`keras_tlft.schedule`);
every error names what was expected and what was received.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from keras_tlft._files import read_json
from keras_tlft.checks import check_regular_file, received
from keras_tlft.model.batchnorm import bn_policy
from keras_tlft.schedules.schedule import ALIASES, NON_EMPTY, Schedule

__all__ = ["parse_schedule", "read_schedule_file"]


def parse_schedule(schedule: Any, **options) -> Schedule:
    """A :class:`Schedule` from any accepted form, with ``options`` (Schedule fields) applied.

    Accepts a :class:`Schedule`, ``{epoch: unfreeze}``, the JSON form (a mapping with
    ``"stages"``), a list of stages, a preset string or the path of a JSON file.
    """
    from keras_tlft.schedules.presets import PRESET_HELP, parse_preset

    if isinstance(schedule, Schedule):
        base = schedule
    elif isinstance(schedule, os.PathLike) or (
            isinstance(schedule, str) and _names_a_file(schedule)):
        text = os.fspath(schedule)
        check_regular_file("schedule", text, "Schedule file")
        base = read_schedule_file(text)
    elif isinstance(schedule, str):
        base = parse_preset(schedule)
    elif isinstance(schedule, Mapping):
        base = Schedule.from_mapping(schedule)
    elif isinstance(schedule, Sequence) and not isinstance(schedule, (bytes, bytearray)):
        if not schedule:
            raise ValueError(f"Invalid schedule: it has no stages. Expected {NON_EMPTY}. "
                             f"{received('schedule', schedule)}")
        base = Schedule(stages=tuple(schedule), trigger=options.pop("trigger", "epoch"))
    else:
        raise ValueError(f"Invalid schedule: expected {PRESET_HELP}. "
                         f"{received('schedule', schedule)}")
    if not options:
        return base
    names = {f.name for f in dataclasses.fields(Schedule)}
    unknown = sorted(set(options) - names - set(ALIASES))
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown}: expected Schedule fields "
                        f"{sorted(names)}. Received: "
                        + ", ".join(f"{k}={options[k]!r}" for k in unknown))
    if options.get("backbone_lr") is not None and "backbone_lr_ratio" not in options:
        options["backbone_lr_ratio"] = 1.0  # an absolute rate replaces the schedule's ratio
    if "train_bn" in options and "bn" not in options:  # the old spelling overrides too
        options["bn"] = bn_policy(train_bn=options.pop("train_bn"))
    return dataclasses.replace(base, **options)


def read_schedule_file(path: str | os.PathLike) -> Schedule:
    """A schedule from a JSON file: invalid JSON and a key given twice are clear errors."""
    return parse_schedule(read_json(path, "Schedule file"))


def _names_a_file(text: str) -> bool:
    """Whether a schedule string is a path: it ends in ``.json``, or something exists there
    (a file, or a directory or FIFO given by mistake) and it is not a preset's name."""
    if text.endswith(".json") or os.path.isfile(text):
        return True
    if not os.path.exists(text):
        return False
    from keras_tlft.schedules.presets import parse_preset

    try:
        parse_preset(text)
    except ValueError:
        return True
    return False

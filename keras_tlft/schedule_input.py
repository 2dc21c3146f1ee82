"""Reading a schedule from what users write: a mapping ``{epoch: unfreeze}``, the JSON form, a
list of stages, a preset string, or the path of a JSON file (:func:`parse_schedule`).

The :class:`~keras_tlft.schedule.Schedule` it returns is plain data (:mod:`keras_tlft.schedule`);
every error names what was expected and what was received.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from keras_tlft.batchnorm import bn_policy
from keras_tlft.checks import received
from keras_tlft.schedule import ALIASES, Schedule

__all__ = ["parse_schedule", "read_schedule_file"]


def parse_schedule(schedule: Any, **options) -> Schedule:
    """A :class:`Schedule` from any accepted form, with ``options`` (Schedule fields) applied.

    Accepts a :class:`Schedule`, ``{epoch: unfreeze}``, the JSON form (a mapping with
    ``"stages"``), a list of stages, a preset string or the path of a JSON file.
    """
    from keras_tlft.presets import PRESET_HELP, parse_preset

    if isinstance(schedule, Schedule):
        base = schedule
    elif isinstance(schedule, os.PathLike) or (
            isinstance(schedule, str) and (schedule.endswith(".json") or os.path.isfile(schedule))):
        text = os.fspath(schedule)
        if not os.path.isfile(text):
            raise ValueError(f"Schedule file {text!r} does not exist. "
                             f"{received('schedule', text)}")
        base = read_schedule_file(text)
    elif isinstance(schedule, str):
        base = parse_preset(schedule)
    elif isinstance(schedule, Mapping):
        base = _schedule_from_mapping(schedule)
    elif isinstance(schedule, Sequence) and not isinstance(schedule, (bytes, bytearray)):
        if not schedule:
            raise ValueError(f"Invalid schedule: it has no stages. Expected {_NON_EMPTY}. "
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


_NON_EMPTY = ("at least one stage, as {epoch: unfreeze} (e.g. {0: 'none', 4: 2}), or a preset "
              "('gradual' unfreezes one more block every epoch)")


def _schedule_from_mapping(schedule: Mapping) -> Schedule:
    """``{epoch: unfreeze}``, or the JSON form (Schedule fields), never a mix of the two."""
    if not schedule:
        raise ValueError(f"Invalid schedule: it has no stages. Expected {_NON_EMPTY}. "
                         f"{received('schedule', dict(schedule))}")
    epochs = [k for k in schedule if _is_epoch_key(k)]
    if not epochs:
        if "stages" in schedule and isinstance(schedule["stages"], (Mapping, Sequence)) and \
                not isinstance(schedule["stages"], str) and not schedule["stages"]:
            raise ValueError(f"Invalid schedule: its 'stages' are empty. Expected {_NON_EMPTY}, "
                             f"or no 'stages' with 'every' for generated ones. "
                             f"{received('schedule', dict(schedule))}")
        return Schedule.from_json(schedule)
    if len(epochs) != len(schedule):
        others = [k for k in schedule if not _is_epoch_key(k)]
        raise ValueError(
            "Invalid schedule: its keys mix epochs and other names. Expected {epoch: unfreeze} "
            "with integer epochs >= 0, or the JSON form with named fields ('stages', "
            f"'trigger', ...). Received: keys={list(schedule)!r} (not epochs: {others!r})"
        )
    return Schedule(stages=schedule)


def read_schedule_file(path: str | os.PathLike) -> Schedule:
    """A schedule from a JSON file: invalid JSON and a key given twice are clear errors."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f, object_pairs_hook=_refuse_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"Schedule file {str(path)!r} is not valid JSON: {exc}. "
                             f"Received: path={str(path)!r}") from None
        except _DuplicateKey as exc:
            raise ValueError(
                f"Schedule file {str(path)!r} gives the key {exc.key!r} twice in one object: "
                "JSON readers keep only the last, so one of the two would be ignored. "
                f"Expected each key once. Received: path={str(path)!r}"
            ) from None
    return parse_schedule(data)


class _DuplicateKey(Exception):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs) -> dict:
    data: dict = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _is_epoch_key(key) -> bool:
    return (isinstance(key, int) and not isinstance(key, bool)) or (
        isinstance(key, str) and re.fullmatch(r"\s*-?\d+\s*", key) is not None)

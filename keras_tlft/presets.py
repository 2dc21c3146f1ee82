"""Schedule presets: ``two_phase``, ``fine_tune_at``, ``gradual``, ``plateau``, and the preset
strings (``"gradual:every=2"``) that :func:`keras_tlft.schedule.parse_schedule` accepts.

The presets build :class:`~keras_tlft.schedule.Schedule` objects; plugins add their own through
the ``register_schedules`` hook (:func:`registered_presets` lists both). The old import path
``keras_tlft.schedule.two_phase`` (and the other names here) still works.
"""

from __future__ import annotations

import inspect
import json
import os

from keras_tlft.schedule import Schedule, Stage, _received, check_number
from keras_tlft.spec import closest_names, did_you_mean

__all__ = ["COMMON_OPTIONS", "PRESETS", "fine_tune_at", "gradual", "parse_preset", "plateau",
           "preset_options", "registered_presets", "two_phase"]

# Options every preset takes besides its own: how the unfrozen blocks train.
COMMON_OPTIONS = ("backbone_lr", "backbone_lr_ratio", "block_lr_decay", "warmup_steps",
                  "bn", "train_bn", "reset_optimizer_state")


def two_phase(frozen_epochs: int = 4, learning_rate: float | None = 1e-5, **options) -> Schedule:
    """Train the head for ``frozen_epochs`` epochs, then the whole model at ``learning_rate``
    (the Keras transfer-learning guide's recipe). ``options``: any of :data:`COMMON_OPTIONS`."""
    _check_preset_options("two_phase", options)
    check_number("frozen_epochs", frozen_epochs, low=1, allow_low=True, integer=True)
    return Schedule(
        stages=(Stage("none", 0), Stage("all", frozen_epochs, learning_rate)), **options
    )


def fine_tune_at(layer, epoch: int = 4, learning_rate: float | None = None, **options) -> Schedule:
    """Train the head, then from ``epoch`` on every layer from ``layer`` (an index or a name) up:
    the classic ``fine_tune_at = 100``. ``options``: any of :data:`COMMON_OPTIONS`."""
    _check_preset_options("fine_tune_at", options)
    return Schedule(
        stages=(Stage("none", 0), Stage(f"from:{layer}", epoch, learning_rate)), **options
    )


def gradual(every: int = 1, start: int | None = None, max_blocks: int | None = None,
            **options) -> Schedule:
    """One more block every ``every`` epochs, top block first, from epoch ``start`` (default
    ``every``) until the whole backbone (or ``max_blocks`` blocks) trains: ULMFiT's gradual
    unfreezing. ``options``: any of :data:`COMMON_OPTIONS`."""
    _check_preset_options("gradual", options)
    return Schedule(every=every, start=start, max_blocks=max_blocks, **options)


def plateau(patience: int = 2, monitor: str = "val_loss", max_blocks: int | None = None,
            mode: str = "auto", min_delta: float = 0.0, restore_best_weights: bool = False,
            **options) -> Schedule:
    """One more block each time ``monitor`` has not improved (by more than ``min_delta``, in
    ``mode``) for ``patience`` epochs, optionally restoring the stage's best weights first.
    ``options``: any of :data:`COMMON_OPTIONS`."""
    _check_preset_options("plateau", options)
    return Schedule(trigger="plateau", patience=patience, monitor=monitor,
                    max_blocks=max_blocks, mode=mode, min_delta=min_delta,
                    restore_best_weights=restore_best_weights, **options)


PRESETS = {
    "two_phase": two_phase,
    "fine_tune_at": fine_tune_at,
    "gradual": gradual,
    "plateau": plateau,
}

PRESET_HELP = (
    "a preset NAME or NAME:key=value,... with NAME one of "
    f"{', '.join(PRESETS)} (e.g. 'gradual:every=2', 'fine_tune_at:layer=100,epoch=5'), "
    "a JSON file, or a mapping {epoch: unfreeze}"
)


def registered_presets() -> dict:
    """Every schedule preset: ours (:data:`PRESETS`, registered by
    :mod:`keras_tlft.default_plugins`) and the plugins' (their ``register_schedules`` hooks)."""
    from keras_tlft.registry import get_registry

    return get_registry().schedules or PRESETS


def preset_options(name: str) -> tuple[str, ...]:
    """The options preset ``name`` takes: its own, then :data:`COMMON_OPTIONS`."""
    params = inspect.signature(registered_presets()[name]).parameters.values()
    return (*(p.name for p in params if p.kind is not p.VAR_KEYWORD), *COMMON_OPTIONS)


def _unknown_options(name: str, options) -> str | None:
    """What is wrong with ``options`` for preset ``name`` (None: nothing)."""
    valid = preset_options(name)
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return None
    hints = {k: closest_names(k, valid, n=1) for k in unknown}
    what = ", ".join(f"{k!r}" + (f" (did you mean {hints[k][0]!r}?)" if hints[k] else "")
                     for k in unknown)
    return (f"unknown option{'s' if len(unknown) > 1 else ''} {what}; expected some of "
            f"{', '.join(valid)}")


def _check_preset_options(name: str, options) -> None:
    problem = _unknown_options(name, options)
    if problem:
        received = ", ".join(f"{k}={options[k]!r}" for k in options)
        raise TypeError(f"Invalid arguments for preset {name!r}: {problem}. Received: {received}")


def parse_preset(text: str) -> Schedule:
    """A schedule from a preset string: ``"gradual"``, ``"two_phase:frozen_epochs=3"``..."""
    name, _, args = text.strip().partition(":")
    key = name.strip().lower().replace("-", "_")
    presets = registered_presets()
    if key not in presets:
        if _looks_like_a_path(name):
            raise ValueError(f"Schedule file {text!r} does not exist (and it is not a preset: "
                             f"expected {PRESET_HELP}). {_received('schedule', text)}")
        hint = did_you_mean(closest_names(key, list(presets)))
        raise ValueError(f"Unknown schedule {text!r}: expected {PRESET_HELP}.{hint} "
                         f"{_received('schedule', text)}")
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"Invalid preset argument {item!r}: expected key=value. "
                             f"{_received('schedule', text)}")
        if k.strip() in kwargs:
            raise ValueError(f"Invalid arguments for preset {key!r}: {k.strip()!r} is given "
                             f"twice. {_received('schedule', text)}")
        try:
            kwargs[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            kwargs[k.strip()] = v.strip()
    problem = _unknown_options(key, kwargs)
    if problem:
        raise ValueError(f"Invalid arguments for preset {key!r}: {problem}. "
                         f"{_received('schedule', text)}")
    try:
        return presets[key](**kwargs)
    except TypeError as exc:  # a required option left out: fine_tune_at without layer
        raise ValueError(f"Invalid arguments for preset {key!r}: {exc}. "
                         f"{_received('schedule', text)}") from None


def _looks_like_a_path(text: str) -> bool:
    """A schedule string that names a file rather than a preset: a folder or an extension."""
    return any(sep in text for sep in ("/", "\\", os.sep)) or bool(os.path.splitext(text)[1])

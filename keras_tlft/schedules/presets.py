"""Schedule presets: ``two_phase``, ``fine_tune_at``, ``gradual``, ``plateau``, the recipes from
the literature ``lp_ft``, ``ulmfit`` and ``layer_decay``, and the preset strings
(``"gradual:every=2"``) that :func:`keras_tlft.schedule.parse_schedule` accepts.

The presets build :class:`~keras_tlft.schedule.Schedule` objects; plugins add their own through
the ``register_schedules`` hook (:func:`registered_presets` lists both). The old import path
``keras_tlft.schedule.two_phase`` (and the other names here) still works.
"""

from __future__ import annotations

import inspect
import json
import os

from keras_tlft.backbones.spec import closest_names, did_you_mean
from keras_tlft.checks import check_number, received
from keras_tlft.schedules.schedule import Schedule, Stage

__all__ = ["COMMON_OPTIONS", "DEFAULT_BACKBONE_LR_RATIO", "DEFAULT_PRESET", "PRESETS",
           "default_schedule", "fine_tune_at", "gradual", "layer_decay", "lp_ft", "parse_preset",
           "plateau", "preset_options", "registered_presets", "two_phase", "ulmfit"]

# Options every preset takes besides its own: how the unfrozen blocks train.
COMMON_OPTIONS = ("backbone_lr", "backbone_lr_ratio", "block_lr_decay", "warmup_steps",
                  "bn", "train_bn", "reset_optimizer_state", "stage_lr_shape", "cut_frac",
                  "ratio")


# The library's one default, used alike by ProgressiveUnfreeze() without a schedule, the bare
# "gradual" preset, fine_tune() and the CLI: gradual unfreezing, one more block every epoch, the
# unfrozen blocks at a tenth of the head's learning rate. Chosen on the transfer matrix
# (benchmarks/transfer_matrix.py, docs/benchmarks/transfer-matrix.md); keras-tlft 0.1 used 1
# here (pass backbone_lr_ratio=1 for that).
DEFAULT_PRESET = "gradual"
DEFAULT_BACKBONE_LR_RATIO = 0.1


def default_schedule(**options) -> Schedule:
    """The default schedule: :func:`gradual` with its defaults (``backbone_lr_ratio=``
    :data:`DEFAULT_BACKBONE_LR_RATIO`), ``options`` (any of its arguments) applied."""
    return PRESETS[DEFAULT_PRESET](**options)


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
    unfreezing, the library's default schedule. The unfrozen blocks train at
    ``backbone_lr_ratio`` times the head's learning rate: :data:`DEFAULT_BACKBONE_LR_RATIO`
    (0.1) unless given (``backbone_lr_ratio=1``: keras-tlft 0.1's default) or ``backbone_lr``
    (absolute) is. ``options``: any of :data:`COMMON_OPTIONS`."""
    _check_preset_options("gradual", options)
    _default_ratio(options)
    return Schedule(every=every, start=start, max_blocks=max_blocks, **options)


def _default_ratio(options: dict) -> None:
    """``backbone_lr_ratio`` set to the default in ``options`` unless it, or the absolute
    ``backbone_lr`` (its alternative), is given."""
    if options.get("backbone_lr") is None:
        options.setdefault("backbone_lr_ratio", DEFAULT_BACKBONE_LR_RATIO)


def plateau(patience: int = 2, monitor: str = "val_loss", max_blocks: int | None = None,
            mode: str = "auto", min_delta: float = 0.0, restore_best_weights: bool = False,
            max_stage_epochs: int | None = None, best_scope: str = "stage",
            **options) -> Schedule:
    """One more block each time ``monitor`` has not improved (by more than ``min_delta``, in
    ``mode``, on the best of the stage or of the run: ``best_scope``) for ``patience`` epochs, or
    after ``max_stage_epochs`` epochs in a stage, optionally restoring the best weights first.
    ``options``: any of :data:`COMMON_OPTIONS`."""
    _check_preset_options("plateau", options)
    return Schedule(trigger="plateau", patience=patience, monitor=monitor,
                    max_blocks=max_blocks, mode=mode, min_delta=min_delta,
                    restore_best_weights=restore_best_weights,
                    max_stage_epochs=max_stage_epochs, best_scope=best_scope, **options)


def lp_ft(probe_epochs: int = 5, learning_rate: float | None = 1e-5, **options) -> Schedule:
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): a linear probe
    (the head alone) for ``probe_epochs`` epochs, then the whole model at the lower
    ``learning_rate`` (absolute; ``None``: the optimizer's).

    The probe is a fixed number of epochs rather than "until a plateau", so that it is known in
    advance: :func:`keras_tlft.fine_tune` then runs it on cached backbone features
    (``fit_frozen``), where an epoch costs only the head's work and a long probe, close to
    convergence, is cheap. For a probe that ends when a metric stops improving, use
    ``Schedule(trigger="plateau", stages=[Stage("none"), Stage("all", learning_rate=1e-5)])``.
    ``options``: any of :data:`COMMON_OPTIONS`.
    """
    _check_preset_options("lp_ft", options)
    check_number("probe_epochs", probe_epochs, low=1, allow_low=True, integer=True)
    return Schedule(
        stages=(Stage("none", 0), Stage("all", probe_epochs, learning_rate)), **options
    )


def ulmfit(every: int = 1, start: int | None = None, max_blocks: int | None = None,
           block_lr_decay: float = 1 / 2.6, stage_lr_shape: str = "slanted_triangular",
           **options) -> Schedule:
    """ULMFiT (Howard & Ruder 2018): gradual unfreezing (the head alone, then one more block
    every ``every`` epochs, top block first), discriminative learning rates (each block
    ``block_lr_decay``, 1/2.6, times the one above it) and slanted triangular learning rates
    (``stage_lr_shape``) restarted at each stage: up from 1/``ratio`` (1/32) over the first
    ``cut_frac`` (10%) of the stage's steps, then back down to 1/``ratio`` at its end.
    ``options``: any of :data:`COMMON_OPTIONS`.
    """
    _check_preset_options("ulmfit", options)
    return Schedule(every=every, start=start, max_blocks=max_blocks,
                    block_lr_decay=block_lr_decay, stage_lr_shape=stage_lr_shape, **options)


def layer_decay(decay: float = 0.75, learning_rate: float | None = None,
                **options) -> Schedule:
    """Layer-wise learning-rate decay as timm and BEiT fine-tune ViTs: every block trains from
    the first epoch, the head at ``learning_rate`` (``None``: the optimizer's), the top block at
    ``decay`` times that, and block ``k`` from the top (the top one is ``k = 1``) at
    ``decay ** k`` times it.

    That is timm's convention (``param_groups_layer_decay``): the head is layer ``L + 1`` at
    scale 1, encoder layer ``i`` (0-based) is layer ``i + 1`` at ``decay ** (L - i)``, and the
    embeddings are layer 0 at ``decay ** (L + 1)``. It holds here when the backbone's blocks are
    the embeddings (the lowest block) and one block per encoder layer; timm counts the final
    norm with the head, here it trains with the block that holds it. ``decay`` sets
    ``backbone_lr_ratio`` and ``block_lr_decay``, so those and ``backbone_lr`` are not options
    here. ``options``: any other of :data:`COMMON_OPTIONS`.
    """
    taken = sorted(set(layer_decay.fixed_options) & set(options))
    if taken:
        raise ValueError(
            f"Invalid arguments for preset 'layer_decay': {', '.join(taken)} "
            f"{'is' if len(taken) == 1 else 'are'} set by decay (the top block trains at decay "
            "times the head's rate, each block below at decay times the one above). Expected "
            "decay= alone. Received: "
            + ", ".join(f"{k}={options[k]!r}" for k in taken))
    _check_preset_options("layer_decay", options)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError("Invalid decay: expected a number in (0, 1], the learning-rate "
                         f"multiplier per block from the head down. {received('decay', decay)}")
    return Schedule(stages=(Stage("all", 0, learning_rate),), backbone_lr_ratio=decay,
                    block_lr_decay=decay, **options)


# The common options a preset sets itself (preset_options leaves them out).
layer_decay.fixed_options = ("backbone_lr", "backbone_lr_ratio", "block_lr_decay")

PRESETS = {
    "two_phase": two_phase,
    "fine_tune_at": fine_tune_at,
    "gradual": gradual,
    "plateau": plateau,
    "lp_ft": lp_ft,
    "ulmfit": ulmfit,
    "layer_decay": layer_decay,
}

PRESET_HELP = (
    "a preset NAME or NAME:key=value,... with NAME one of "
    f"{', '.join(PRESETS)} (e.g. 'gradual:every=2', 'fine_tune_at:layer=100,epoch=5'), "
    "a JSON file, or a mapping {epoch: unfreeze}"
)


def registered_presets() -> dict:
    """Every schedule preset: ours (:data:`PRESETS`, registered by
    :mod:`keras_tlft.default_plugins`) and the plugins' (their ``register_schedules`` hooks)."""
    from keras_tlft.backbones.registry import get_registry

    return get_registry().schedules or PRESETS


def preset_options(name: str) -> tuple[str, ...]:
    """The options preset ``name`` takes: its own, then :data:`COMMON_OPTIONS` (less those it
    sets itself, listed in the factory's ``fixed_options`` attribute)."""
    factory = registered_presets()[name]
    params = inspect.signature(factory).parameters.values()
    own = (p.name for p in params if p.kind is not p.VAR_KEYWORD)
    fixed = getattr(factory, "fixed_options", ())
    # dict.fromkeys: an option that is both its own and common (ulmfit's block_lr_decay) once.
    return tuple(dict.fromkeys((*own, *(o for o in COMMON_OPTIONS if o not in fixed))))


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
                             f"expected {PRESET_HELP}). {received('schedule', text)}")
        hint = did_you_mean(closest_names(key, list(presets)))
        raise ValueError(f"Unknown schedule {text!r}: expected {PRESET_HELP}.{hint} "
                         f"{received('schedule', text)}")
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"Invalid preset argument {item!r}: expected key=value. "
                             f"{received('schedule', text)}")
        if k.strip() in kwargs:
            raise ValueError(f"Invalid arguments for preset {key!r}: {k.strip()!r} is given "
                             f"twice. {received('schedule', text)}")
        try:
            kwargs[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            kwargs[k.strip()] = v.strip()
    problem = _unknown_options(key, kwargs)
    if problem:
        raise ValueError(f"Invalid arguments for preset {key!r}: {problem}. "
                         f"{received('schedule', text)}")
    try:
        return presets[key](**kwargs)
    except TypeError as exc:  # a required option left out: fine_tune_at without layer
        raise ValueError(f"Invalid arguments for preset {key!r}: {exc}. "
                         f"{received('schedule', text)}") from None


def _looks_like_a_path(text: str) -> bool:
    """A schedule string that names a file rather than a preset: a folder or an extension."""
    return any(sep in text for sep in ("/", "\\", os.sep)) or bool(os.path.splitext(text)[1])

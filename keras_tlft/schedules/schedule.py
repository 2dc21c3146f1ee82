"""Fine-tuning schedules as plain data: stages, JSON files, and what a stage means.

A :class:`Schedule` says which unfreeze state (``"none"``, ``k``, ``"all"``, ``"from:..."``, as in
``keras-tlft inspect --unfreeze``) trains when, and at which learning rates. It imports no Keras
and touches no layer. Its presets (``two_phase``, ``gradual``...) are in :mod:`keras_tlft.presets`;
reading one from a mapping, a preset string or a JSON file (``parse_schedule``) in
:mod:`keras_tlft.schedule_input`; what each stage means on a backbone, for ``keras-tlft inspect
--schedule`` and the :class:`~keras_tlft.ProgressiveUnfreeze` callback alike, in
:mod:`keras_tlft.plan`.

Example:

```python
schedule = parse_schedule({0: "none", 4: 2, 8: "all"}, block_lr_decay=1 / 2.6)
schedule.save("schedule.json")
plan = plan_stages(backbone.layers, blocks, "schedule.json", epochs=12, learning_rate=1e-3)
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keras_tlft._files import atomic_write, read_json
from keras_tlft.checks import check_choice, check_number, received
from keras_tlft.model.batchnorm import bn_policy
from keras_tlft.model.blocks import UNFREEZE_HELP, UnfreezeState
from keras_tlft.schedules.lr_rules import check_lr_shape
from keras_tlft.schedules.stage import Stage

# check_number lives in keras_tlft.checks; re-exported here, where it was defined before.
__all__ = ["Schedule", "Stage", "check_number"]

TRIGGERS = ("epoch", "plateau")
MODES = ("auto", "min", "max")
BEST_SCOPES = ("stage", "run")
MAX_STAGES = 128
# Old names still accepted as Schedule arguments and in JSON files (never written).
ALIASES = ("train_bn",)
_MAX_MODE_HINTS = ("acc", "auc", "precision", "recall", "f1", "iou")
NON_EMPTY = ("at least one stage, as {epoch: unfreeze} (e.g. {0: 'none', 4: 2}), or a preset "
             "('gradual' unfreezes one more block every epoch)")


@dataclass(frozen=True)
class Schedule:
    """What trains when, at which learning rates: the whole configuration of a
    :class:`~keras_tlft.ProgressiveUnfreeze` run, as plain data.

    Args:
        stages: the stages, as :class:`Stage` objects, ``{epoch: unfreeze}`` or a list of
            ``{"epoch", "unfreeze", "learning_rate"}`` mappings. With ``trigger="plateau"``, a list
            of unfreeze states entered one after the other. Empty: one more block per stage, from
            ``"none"`` to the whole backbone (see ``every``, ``start`` and ``max_blocks``).
        trigger: ``"epoch"`` (stages begin at their epoch) or ``"plateau"`` (the next stage
            begins when ``monitor`` has not improved for ``patience`` epochs).
        every: with generated stages and ``trigger="epoch"``, epochs per stage (ULMFiT's gradual
            unfreezing). Defaults to 1.
        start: the epoch the first block unfreezes, for generated epoch stages. Defaults to
            ``every``.
        max_blocks: stop generating stages after this many blocks (default: all of them).
        monitor: the metric a plateau schedule watches. Defaults to ``"val_loss"``.
        patience: epochs without improvement before a plateau schedule moves on. Defaults to 2.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the metric's name), as in EarlyStopping.
        min_delta: the smallest change that counts as an improvement. Defaults to 0.
        restore_best_weights: in a plateau schedule, restore the weights of the stage's best
            epoch (the run's, with ``best_scope="run"``) before the next stage starts.
            Defaults to False.
        backbone_lr: the learning rate of the (top block of the) unfrozen backbone, absolute.
        backbone_lr_ratio: or the backbone's learning rate as a ratio of the head's (which
            follows the optimizer's schedule). Defaults to 1 here; the default schedule
            (``ProgressiveUnfreeze()``, ``"gradual"``, ``fine_tune``) sets 0.1.
        block_lr_decay: multiplier per block below the top one (discriminative fine-tuning;
            ULMFiT uses ``1 / 2.6``). Defaults to 1.
        warmup_steps: ramp the learning rate of newly unfrozen blocks up linearly over this many
            optimizer steps. Defaults to 0.
        bn: how the BatchNormalization layers of unfrozen blocks train: ``"frozen"`` (the
            default: they stay as loaded),
            ``"affine"`` (gamma and beta train while the moving statistics stay as loaded, the
            backbone in inference mode: the TensorFlow MobileNetV2 tutorial) or ``"train"``
            (training mode, moving statistics updated). See :mod:`keras_tlft.batchnorm`.
        reset_optimizer_state: reset the optimizer's state (e.g. Adam's moments of the head) at
            each stage change. By default it is kept.
        max_stage_epochs: in a plateau schedule, the most epochs a stage runs: the next stage
            begins at the plateau or after this many epochs in the stage, whichever comes
            first. Defaults to None (no limit).
        best_scope: what a plateau stage's value must beat to count as an improvement:
            ``"stage"`` (the best of this stage; each stage starts afresh) or ``"run"`` (the best
            of the whole run so far, finetuning-scheduler's semantics). The wait restarts at
            each stage either way; ``restore_best_weights`` restores the best weights of the
            same scope, and ``keras_tlft.StageEarlyStopping`` keeps its best in it too.
            Defaults to ``"stage"``: a stage that unfreezes more blocks can start worse than
            the last one ended (new blocks at a fresh learning rate), and under ``"run"`` such
            a stage is cut after ``patience`` epochs before it can recover.
        stage_lr_shape: ``"constant"`` (the default), or ``"slanted_triangular"``: within each
            stage every learning rate (head and blocks) rises linearly from ``1/ratio`` of its
            value over the first ``cut_frac`` of the stage's steps, then falls linearly back to
            ``1/ratio`` at the stage's end (ULMFiT's slanted triangular learning rates,
            restarted at each stage). A stage's steps are its epochs times the steps per epoch
            of the ``fit``; a stage whose end is not known in advance (the last one, or any
            stage of a plateau schedule) runs its triangle over the rest of the ``fit``'s
            epochs.
        cut_frac: with ``"slanted_triangular"``, the fraction of a stage's steps over which
            its learning rates rise. Defaults to 0.1 (ULMFiT's).
        ratio: with ``"slanted_triangular"``, how many times smaller than the peak a stage's
            learning rates start and end. Defaults to 32 (ULMFiT's).
        allow_refreeze: ``False`` (the default): a stage that trains fewer layers than the
            one before (``{0: 2, 2: 1}``, ``{0: "all", 2: "none"}``) is a ``ValueError`` when
            the schedule meets a backbone, as finetuning-scheduler refuses non-monotonic
            phases (a block frozen again stops training with its optimizer state kept, which is
            rarely what a schedule means). ``True`` runs such a schedule;
            ``keras-tlft inspect --schedule`` names the blocks each stage freezes again.
        train_bn: the old spelling of ``bn``: ``True`` is ``bn="train"``, ``False``
            ``bn="frozen"``. Accepted (also in JSON files), never written.
    """

    stages: tuple = ()
    trigger: str = "epoch"
    every: int | None = None
    start: int | None = None
    max_blocks: int | None = None
    monitor: str = "val_loss"
    patience: int = 2
    mode: str = "auto"
    min_delta: float = 0.0
    restore_best_weights: bool = False
    backbone_lr: float | None = None
    backbone_lr_ratio: float = 1.0
    block_lr_decay: float = 1.0
    warmup_steps: int = 0
    bn: str = "frozen"
    reset_optimizer_state: bool = False
    max_stage_epochs: int | None = None
    best_scope: str = "stage"
    stage_lr_shape: str = "constant"
    cut_frac: float = 0.1
    ratio: float = 32.0
    allow_refreeze: bool = False
    train_bn: dataclasses.InitVar[bool | None] = None

    def __post_init__(self, train_bn=None):
        object.__setattr__(self, "bn", bn_policy(self.bn, train_bn))
        self._check_fields()

    def _check_fields(self):
        check_choice("trigger", self.trigger, TRIGGERS)
        object.__setattr__(self, "stages", self._parse_stages(self.stages))
        for name in ("every", "max_blocks", "max_stage_epochs"):
            check_number(name, getattr(self, name), low=1, allow_low=True, allow_none=True,
                         integer=True)
        check_number("start", self.start, allow_none=True, allow_low=True, integer=True)
        check_number("patience", self.patience, low=1, allow_low=True, integer=True)
        check_number("min_delta", self.min_delta, allow_low=True)
        check_number("backbone_lr", self.backbone_lr, allow_none=True)
        check_number("backbone_lr_ratio", self.backbone_lr_ratio)
        check_number("warmup_steps", self.warmup_steps, allow_low=True, integer=True)
        if not (isinstance(self.block_lr_decay, (int, float)) and 0 < self.block_lr_decay <= 1):
            raise ValueError("Invalid block_lr_decay: expected a number in (0, 1], the "
                             "learning-rate multiplier per block below the top one. "
                             f"{received('block_lr_decay', self.block_lr_decay)}")
        check_choice("best_scope", self.best_scope, BEST_SCOPES)
        check_choice("mode", self.mode, MODES)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"Invalid monitor: expected a metric name. "
                             f"{received('monitor', self.monitor)}")
        for name in ("restore_best_weights", "reset_optimizer_state", "allow_refreeze"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Invalid {name}: expected True or False. "
                                 f"{received(name, getattr(self, name))}")
        if self.backbone_lr is not None and self.backbone_lr_ratio != 1.0:
            raise ValueError(
                "backbone_lr (absolute) and backbone_lr_ratio (relative to the head's) are "
                "alternatives: set one of them. "
                f"Received: backbone_lr={self.backbone_lr!r}, "
                f"backbone_lr_ratio={self.backbone_lr_ratio!r}"
            )
        self._check_trigger_fields()
        check_lr_shape(self.stage_lr_shape, self.cut_frac, self.ratio)

    def _parse_stages(self, stages) -> tuple:
        if isinstance(stages, Mapping):
            stages = [Stage(spec, _epoch_key(key)) for key, spec in stages.items()]
        elif isinstance(stages, (str, int, UnfreezeState)) or not isinstance(stages, Sequence):
            raise ValueError(
                "Invalid schedule: stages must be a mapping {epoch: unfreeze} or a list of "
                f"stages. {received('stages', stages)}"
            )
        stages = tuple(Stage.from_json(s) for s in stages)
        if len(stages) > MAX_STAGES:
            raise ValueError(f"A schedule has at most {MAX_STAGES} stages. "
                             f"Received: {len(stages)} stages")
        if self.trigger == "plateau":
            if any(s.epoch not in (None, 0) for s in stages[1:] + stages[:1]):
                raise ValueError(
                    "Invalid plateau schedule: its stages begin when the monitored metric stops "
                    "improving, so they take no epoch. "
                    f"{received('stages', [s.to_json() for s in stages])}"
                )
            return tuple(dataclasses.replace(s, epoch=None) for s in stages)
        if any(s.epoch is None for s in stages):
            raise ValueError(
                "Invalid schedule: every stage of an epoch schedule needs an epoch (or use "
                f"trigger='plateau'). {received('stages', [s.to_json() for s in stages])}"
            )
        epochs = [s.epoch for s in stages]
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"Invalid schedule: two stages begin at the same epoch. "
                             f"Received: epochs={epochs}")
        return tuple(sorted(stages, key=lambda s: s.epoch))

    def _check_trigger_fields(self):
        if self.stages and (self.every is not None or self.start is not None
                            or self.max_blocks is not None):
            raise ValueError(
                "every, start and max_blocks generate the stages (one more block per stage); "
                "they cannot be combined with explicit stages. "
                f"Received: stages={[s.to_json() for s in self.stages]}, every={self.every}, "
                f"start={self.start}, max_blocks={self.max_blocks}"
            )
        if self.trigger == "plateau" and (self.every is not None or self.start is not None):
            raise ValueError(
                "every and start are for epoch schedules; a plateau schedule moves on when "
                f"{self.monitor!r} stops improving. "
                f"Received: every={self.every}, start={self.start}"
            )
        if self.trigger == "epoch" and self.max_stage_epochs is not None:
            raise ValueError(
                "max_stage_epochs is for plateau schedules (move on at the plateau or after "
                "that many epochs); the stages of an epoch schedule begin at their epochs. "
                f"{received('max_stage_epochs', self.max_stage_epochs)}"
            )

    # ------------------------------------------------------------------ stages

    def resolve(self, n_blocks: int) -> tuple[Stage, ...]:
        """The explicit stages for a backbone of ``n_blocks`` blocks: generated ones spelled out,
        and an epoch schedule always starting at epoch 0 (frozen, ``"none"``, until its first
        stage)."""
        stages = self.stages
        if not stages:
            n = min(self.max_blocks or n_blocks, n_blocks)
            states = ["none", *range(1, n)] + (["all"] if n == n_blocks else [n])
            if self.trigger == "plateau":
                stages = tuple(Stage(s) for s in states)
            else:
                every = self.every or 1
                first = every if self.start is None else self.start
                stages = tuple(Stage(s, first + i * every) for i, s in enumerate(states[1:]))
        if self.trigger == "epoch" and stages[0].epoch != 0:
            stages = (Stage("none", 0),) + stages
        if len(stages) > MAX_STAGES:
            raise ValueError(f"A schedule has at most {MAX_STAGES} stages; this one resolves to "
                             f"{len(stages)}. Use max_blocks or every > 1.")
        return stages

    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "max" if any(h in self.monitor for h in _MAX_MODE_HINTS) else "min"

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict:
        """The schedule as a JSON-able dict (fields at their default are left out)."""
        data: dict = {"trigger": self.trigger}
        if self.stages:
            if self.trigger == "plateau" and all(s.learning_rate is None for s in self.stages):
                data["stages"] = [s.unfreeze.to_json() for s in self.stages]
            else:
                data["stages"] = [s.to_json() for s in self.stages]
                if self.trigger == "plateau":
                    for s in data["stages"]:
                        s.pop("epoch")
        for f in dataclasses.fields(self):
            if f.name in ("stages", "trigger"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                data[f.name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> Schedule:
        """A schedule from :meth:`to_json`'s form (also read from JSON files)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - set(ALIASES))
        if unknown:
            raise ValueError(
                f"Unknown schedule field(s) {unknown}: expected some of {sorted(names)}. "
                f"{received('schedule', dict(data))}"
            )
        return cls(**data)

    @classmethod
    def from_mapping(cls, data: Mapping) -> Schedule:
        """``{epoch: unfreeze}``, or :meth:`to_json`'s form (Schedule fields), never a mix."""
        if not data:
            raise ValueError(f"Invalid schedule: it has no stages. Expected {NON_EMPTY}. "
                             f"{received('schedule', dict(data))}")
        epochs = [k for k in data if _is_epoch_key(k)]
        if not epochs:
            if "stages" in data and isinstance(data["stages"], (Mapping, Sequence)) and \
                    not isinstance(data["stages"], str) and not data["stages"]:
                raise ValueError(f"Invalid schedule: its 'stages' are empty. Expected {NON_EMPTY}, "
                                 f"or no 'stages' with 'every' for generated ones. "
                                 f"{received('schedule', dict(data))}")
            return cls.from_json(data)
        if len(epochs) != len(data):
            others = [k for k in data if not _is_epoch_key(k)]
            raise ValueError(
                "Invalid schedule: its keys mix epochs and other names. Expected {epoch: unfreeze} "
                "with integer epochs >= 0, or the JSON form with named fields ('stages', "
                f"'trigger', ...). Received: keys={list(data)!r} (not epochs: {others!r})"
            )
        return cls(stages=data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the schedule to a JSON file (atomically: a failed write keeps the old file)."""
        with atomic_write(path) as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Schedule:
        """Read a schedule from a JSON file written by :meth:`save` (or by hand, in that form or
        as ``{epoch: unfreeze}``; :func:`~keras_tlft.parse_schedule` also reads presets)."""
        data = read_json(path, "Schedule file")
        if not isinstance(data, Mapping):
            raise ValueError(f"Schedule file {str(path)!r} holds no JSON object: expected a "
                             "schedule's JSON form (parse_schedule reads the other forms). "
                             f"Received: path={str(path)!r}")
        return cls.from_mapping(data)

    def fingerprint(self) -> int:
        """A 31-bit checksum of the schedule, stored with the training state so that a resumed
        run notices a different schedule."""
        data = self.to_json()
        if data.get("bn") == "train":  # as files saved before bn existed spell it
            data["train_bn"] = True
            del data["bn"]
        text = json.dumps(data, sort_keys=True)
        return zlib.crc32(text.encode()) & 0x7FFFFFFF


def _epoch_key(key) -> int:
    if isinstance(key, str) and re.fullmatch(r"\s*-?\d+\s*", key):
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 0:
        raise ValueError(
            "Invalid schedule: its keys are the epochs stages begin at, integers >= 0 (epochs "
            f"count from 0, as in `fit`). {received('epoch', key)}"
        )
    return key


def _is_epoch_key(key) -> bool:
    return (isinstance(key, int) and not isinstance(key, bool)) or (
        isinstance(key, str) and re.fullmatch(r"\s*-?\d+\s*", key) is not None)


def unfreeze_help() -> str:
    return UNFREEZE_HELP

"""ProgressiveUnfreeze: staged unfreezing of a backbone inside one ``fit`` call.

The policy: which blocks train when and at which learning rates, read from a
:class:`~keras_tlft.schedule.Schedule`. The mechanics are elsewhere: what a stage change does to
the model, and the records that let a restarted run resume, in :mod:`keras_tlft.staging`; what it
needs from the optimizer (one build for every variable the schedule can unfreeze, per-variable
learning rates in the compiled step) in :mod:`keras_tlft.optim`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import keras
import numpy as np

from keras_tlft import _keras_compat as compat
from keras_tlft.batchnorm import BN_ATTRIBUTE
from keras_tlft.discovery import Backbone, blocks_argument, find_backbone, locate_backbone
from keras_tlft.optim import StagedOptimizer
from keras_tlft.plan import stage_at_epoch
from keras_tlft.schedule import Schedule
from keras_tlft.schedule_input import parse_schedule
from keras_tlft.staging import NO_BEST, Stager

# Backbone and find_backbone are re-exported where keras-tlft 0.1 defined them.
__all__ = ["Backbone", "ProgressiveUnfreeze", "find_backbone"]

LOG_KEYS = (
    "unfreeze_stage",
    "unfrozen_blocks",
    "trainable_params",
    "head_lr",
    "backbone_lr",
    "backbone_lr_min",
)


@dataclass
class _Fit:
    """The state of one ``fit`` call, reset by ``on_train_begin``."""

    first_epoch: bool = True
    in_epoch: bool = False
    epoch: int = 0
    best_weights: list | None = None
    monitor_seen: bool = False
    warned_monitor: bool = False


class ProgressiveUnfreeze(keras.callbacks.Callback):
    """Unfreeze a backbone stage by stage, inside one `fit`, on every Keras backend.

    Each stage sets which blocks of the backbone train (an unfreeze state: `"none"`, `k` for the
    top k blocks, `"all"`, or `"from:INDEX|LAYER_NAME"`, as `keras-tlft inspect --unfreeze`
    shows) and at which learning rates. Stages begin at given epochs, or when a monitored metric
    stops improving. No recompile and no second `fit` are needed: the optimizer is built once for
    every variable the schedule can unfreeze (keeping the state it had), a stage change sets the
    `trainable` flags and retraces the train step, and each block's learning rate is applied in
    the compiled step as a true learning rate (for Adam too), so learning-rate schedules,
    `BackupAndRestore`, mixed precision and distribution strategies keep working.

    Each epoch's `logs` gain `unfreeze_stage`, `unfrozen_blocks`, `trainable_params`, `head_lr`,
    `backbone_lr` (the top unfrozen block's) and `backbone_lr_min` (the lowest one's), the rates
    in force for the next step, so `History`, `CSVLogger` and `TensorBoard` record them: list
    this callback before `CSVLogger` and `TensorBoard` so that they see those keys. With
    `BackupAndRestore` (in any order) a restarted run resumes in the same stage, with the same
    warm-up and the same plateau counters; only a plateau schedule on a training metric (not
    `val_*`) needs this callback listed before `BackupAndRestore`. With `save_freq=N` Keras
    redoes the killed epoch from its first batch on top of the mid-epoch weights, so those
    batches train twice and later stages begin that many optimizer iterations later.

    Next to it, `keras_tlft.StageEarlyStopping` stops training only at a plateau of the last
    stage (plain `EarlyStopping` would end a plateau schedule at its first plateau).

    BatchNormalization layers of unfrozen blocks follow the policy `bn`: `"frozen"` (the
    default: non-trainable, so in inference mode, exactly as loaded), `"affine"` (gamma and
    beta train; the whole backbone runs in inference mode, so the moving statistics stay exactly
    as loaded and normalise, and the backbone's own `Dropout` is off: what Keras 2's
    `base_model(x, training=False)` did) or `"train"` (training mode: batch statistics, moving
    statistics updated). Each trains the same weights, and keeps the same ones fixed, on Keras
    3.13 to 3.16 and on every backend.
    Do not call the backbone with `training=False` yourself (`build_model` does not): Keras 3.15
    and earlier override it with `fit`'s `training=True` (keras-team/keras#20285), and Keras
    3.16 keeps it, for the layers after the backbone (the head) too. The policy is applied at
    the start of every `fit`, so a model loaded from a `.keras` file gets it back.

    Args:
        schedule: when each stage begins: a mapping `{epoch: unfreeze}`, a preset
            (`"two_phase"`, `"fine_tune_at:layer=100,epoch=5"`, `"gradual:every=2"`,
            `"plateau:patience=2"`, `"lp_ft"`, `"ulmfit"`, `"layer_decay"`), the path of a
            JSON schedule file, or a `Schedule`.
        backbone: the backbone: `None` finds it (the layer `"backbone"` of a model from
            `keras_tlft.build_model`, or the only nested model with weights), a layer name (a
            nested model, or the last backbone layer when its layers sit directly in the model),
            or a layer object (a nested model, or the base model whose layers the model reuses,
            as in `Model(base.input, head(base.output))`).
        blocks: `None` (the spec `build_model` attached; else the registered architecture
            whose block rules fit the backbone's layers, whatever its name, input size or
            width; else derived from the layer names and printed), a registered backbone name
            (its rules), a list of `BlockRule` or `(name, pattern[, after])`, or a callable
            mapping each layer to its block's name (`None`: the block before).
        verbose: 0 is silent, 1 prints the blocks, how they were found, and one line per stage
            change.
        resume_from: the `.keras` file the model was loaded from, to resume fine-tuning with
            its optimizer state: `keras.saving.load_model` builds the optimizer for the
            variables trainable when the file was saved and so skips the saved state, which
            was built for every variable the schedule can unfreeze; the callback builds that
            layout again and loads the state (and its own stage records) from the file, with
            the weights (`Model.load_weights`), once, at the first `fit`.
        allow_empty_stages: a stage that trains no new parameter (its new blocks hold only
            frozen BatchNorm layers or no weights) is a `ValueError` before training; `True`
            makes it a warning, for a schedule that does so on purpose.
        **options: any `Schedule` field, overriding the schedule's: `backbone_lr`,
            `backbone_lr_ratio`, `block_lr_decay`, `warmup_steps`, `bn` (`train_bn=True`: the
            old spelling of `bn="train"`),
            `reset_optimizer_state`, `trigger`, `monitor`, `patience`, `mode`, `min_delta`,
            `restore_best_weights`, `every`, `start`, `max_blocks`, `max_stage_epochs`,
            `best_scope`, `stage_lr_shape` (`"slanted_triangular"`: ULMFiT's learning rates
            within each stage, which needs the `fit`'s steps per epoch), `cut_frac`, `ratio`.

    Example:

    ```python
    model = keras_tlft.build_model("mobilenet_v2", num_classes=10)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(train, validation_data=val, epochs=12,
              callbacks=[ProgressiveUnfreeze(schedule={0: "none", 4: 2, 8: "all"},
                                             backbone_lr_ratio=0.1, block_lr_decay=1 / 2.6,
                                             warmup_steps=100, verbose=1)])

    # One more block whenever val_loss stalls for 2 epochs, best weights kept:
    ProgressiveUnfreeze("plateau:patience=2", restore_best_weights=True)
    # A user-built model: Model(base.input, head(base.output)), blocks from the registry.
    ProgressiveUnfreeze("fine_tune_at:layer=100,epoch=10", backbone=base, blocks="mobilenet_v2")
    ```
    """

    def __init__(self, schedule, backbone=None, blocks=None, verbose=0, resume_from=None,
                 allow_empty_stages=False, **options):
        super().__init__()
        self.schedule: Schedule = parse_schedule(schedule, **options)
        if backbone is not None and not isinstance(backbone, (str, keras.layers.Layer)):
            raise ValueError(
                "backbone must be None, a layer name or a Keras layer. "
                f"Received: backbone={backbone!r}"
            )
        self.backbone = backbone
        self.blocks = blocks_argument(blocks)
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
        self.verbose = verbose
        if resume_from is not None and not str(resume_from).endswith(".keras"):
            raise ValueError(
                "resume_from must be None or the path of the .keras file the model was loaded "
                f"from. Received: resume_from={resume_from!r}"
            )
        self.resume_from = None if resume_from is None else str(resume_from)
        if not isinstance(allow_empty_stages, bool):
            raise ValueError(
                "allow_empty_stages must be True or False. "
                f"Received: allow_empty_stages={allow_empty_stages!r}"
            )
        self.allow_empty_stages = allow_empty_stages
        self._resumed = False
        self._seen = None  # the model of the last fit: recompiled, it is no loaded model
        self._stager: Stager | None = None
        self._fit: _Fit | None = None  # None outside fit: on_test_end also runs in evaluate()

    @property
    def found(self) -> Backbone:
        """Where the backbone is and its blocks (known once the model is set)."""
        return self._stager.backbone

    @property
    def stages(self) -> tuple:
        """The schedule's stages on this backbone (``Stage`` objects; known once the model is
        set)."""
        return self._stager.stages

    @property
    def stage(self) -> int | None:
        """The index of the stage in force in the current epoch (``None`` outside ``fit``)."""
        return None if self._fit is None else self._stager.index

    @property
    def fitting(self) -> bool:
        """Whether a ``fit`` with this callback is running."""
        return self._fit is not None

    @classmethod
    def of(cls, model) -> ProgressiveUnfreeze | None:
        """The ``ProgressiveUnfreeze`` that stages ``model`` (the last one whose ``fit`` set
        it up), found through ``model.optimizer`` whatever the order of the callbacks; ``None``
        when no ``ProgressiveUnfreeze`` has set it up."""
        staged = StagedOptimizer.of(getattr(model, "optimizer", None))
        return None if staged is None else staged.owner

    def set_model(self, model):
        super().set_model(model)
        # Build the optimizer for every variable the schedule can unfreeze *before* any
        # callback's on_train_begin: BackupAndRestore loads the optimizer's state there, and
        # Keras skips that load when the optimizer's variable count differs.
        self._stager = self._prepare(model) if getattr(model, "optimizer", None) else None
        if self._stager is not None:  # a new fit, unless a backup restored later says not
            self._stager.records.set_running(False)

    def _prepare(self, model) -> Stager:
        backbone = locate_backbone(model, self.backbone, self.blocks)
        stager = Stager(model, backbone, self.schedule, self.allow_empty_stages)
        if self.resume_from is not None and not self._resumed:
            self._resumed = stager.restore_optimizer(self.resume_from)  # once: later fits go on
            if self.verbose:
                compat.print_msg("ProgressiveUnfreeze: optimizer state and stage records "
                                 f"restored from {self.resume_from}")
        elif stager.state_skipped and model is not self._seen and self.resume_from is None:
            warnings.warn(
                "ProgressiveUnfreeze found the optimizer already built but never stepped while "
                "the model trains more than the schedule's first stage: fine-tuning goes on "
                "with a fresh optimizer state and stage records. If this model was loaded from "
                "a .keras file saved during fine-tuning, Keras skipped the optimizer state saved "
                "in it (the callback had built the optimizer for every variable the schedule can "
                "unfreeze, keras.saving.load_model builds it for those trainable when the file "
                "was saved); to keep that state, pass resume_from='PATH.keras'.",
                stacklevel=3,
            )
        built_with = getattr(model, BN_ATTRIBUTE, self.schedule.bn)
        if built_with != self.schedule.bn and model is not self._seen:
            warnings.warn(
                f"ProgressiveUnfreeze(bn={self.schedule.bn!r}) trains a model built with "
                f"build_model(bn={built_with!r}): the callback's policy applies. Expected the "
                f"same bn for both. Received: bn={self.schedule.bn!r}",
                stacklevel=3,
            )
        self._seen = model
        # Keras sets the model of every callback of a fit before any on_train_begin: the last
        # ProgressiveUnfreeze to claim the optimizer is the one on_train_begin lets through.
        stager.staged.owner = self
        # Blocks derived from layer names are a guess: always show it (known ones with verbose).
        if self.verbose or backbone.blocks_source == "derived":
            stager.print_blocks()
        if self.verbose:
            stager.print_optimizer_note()
        return stager

    def on_train_begin(self, logs=None):
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError(
                "ProgressiveUnfreeze needs a compiled model: call model.compile(optimizer, "
                "loss) before fit. Received: model.optimizer=None"
            )
        if self._stager is None:
            self._stager = self._prepare(self.model)
        owner = self._stager.staged.owner or self
        if owner is not self:
            raise ValueError(
                "Two ProgressiveUnfreeze callbacks in one fit: both would set the trainable "
                "flags and learning rates of the same model, and the last one would silently "
                "win. Expected one ProgressiveUnfreeze per fit (put every stage in one "
                f"schedule). Received: schedules {self.schedule.to_json()} and "
                f"{owner.schedule.to_json()}"
            )
        self._stager.warn_late_stages((self.params or {}).get("epochs"))
        self._stager.fit_length = self._fit_length()
        self._stager.index = None
        self._fit = _Fit()

    def _fit_length(self) -> tuple[int, int] | None:
        """``(epochs, steps per epoch)`` of this fit, which a slanted triangular shape needs."""
        if self.schedule.stage_lr_shape == "constant":
            return None
        epochs, steps = (self.params or {}).get("epochs"), (self.params or {}).get("steps")
        if not steps or not epochs:
            raise ValueError(
                "A slanted triangular learning-rate shape needs the number of steps per epoch "
                "to size each stage's triangle: pass steps_per_epoch to fit, or data of known "
                "length (arrays, a batched tf.data.Dataset of known cardinality, a PyDataset). "
                f"Received: epochs={epochs!r}, steps={steps!r}"
            )
        return int(epochs), int(steps)

    def on_epoch_begin(self, epoch, logs=None):
        stager, fit = self._stager, self._fit
        if fit.first_epoch:
            stager.records.reconcile(epoch, self.schedule)
            fit.first_epoch = False
        fit.in_epoch, fit.epoch = True, epoch
        if self.schedule.trigger == "epoch":
            target = stage_at_epoch(stager.stages, epoch)
        else:
            target = stager.records.begun_by(epoch, len(stager.stages))
            if self._stage_ran_out(target, epoch):
                self._advance(target + 1, epoch)
                target += 1
        if target != stager.index:
            n_layers = stager.enter(target, epoch)
            if self.verbose:
                stager.announce(epoch, n_layers)

    def on_test_end(self, logs=None):
        # A val_ metric is known here, before any callback's on_epoch_end: a decision taken now
        # is in the optimizer's state when BackupAndRestore saves it, whatever the order.
        monitor = self.schedule.monitor
        if (self.schedule.trigger == "plateau" and self._fit is not None and self._fit.in_epoch
                and logs and monitor.startswith("val_") and monitor[4:] in logs):
            self._observe(float(logs[monitor[4:]]))

    def on_epoch_end(self, epoch, logs=None):
        fit = self._fit
        fit.in_epoch = False
        logs = {} if logs is None else logs
        monitor = self.schedule.monitor
        if self.schedule.trigger == "plateau":
            if not monitor.startswith("val_") and monitor in logs:
                self._observe(float(logs[monitor]))
            if monitor in logs:
                fit.monitor_seen = True
            elif not fit.monitor_seen and not fit.warned_monitor and epoch > 0:
                fit.warned_monitor = True
                warnings.warn(
                    f"ProgressiveUnfreeze's plateau schedule watches {monitor!r}, which is not "
                    f"in the logs (available: {', '.join(sorted(logs)) or 'none'}): the next "
                    f"stage will not begin. Pass validation_data to fit, or monitor= one of "
                    f"the available metrics.",
                    stacklevel=2,
                )
        logs.update(self._stager.log_values())

    def _observe(self, value: float) -> None:
        """One epoch's value of the monitored metric, in a plateau schedule."""
        stager, fit, schedule = self._stager, self._fit, self.schedule
        value = float(np.float32(value))
        best, wait = stager.records.plateau_state()
        sign = -1.0 if schedule.resolved_mode() == "min" else 1.0
        # Before a first value in scope (wait < 0, or an older record's NaN), the best is the
        # worst value, which every finite value beats. Infinite values are stored (JAX's
        # multi-process check of assigned host values finds NaN unequal to itself, not inf).
        if wait < 0 or math.isnan(best):
            best, wait = -sign * math.inf, 0.0
        # A non-finite value (NaN, +inf or -inf) is never an improvement, at a stage's first
        # epoch too: -inf in mode "min" would otherwise become a best nothing can beat.
        if math.isfinite(value) and sign * (value - best) > schedule.min_delta:
            best, wait = value, 0.0
            if schedule.restore_best_weights:
                fit.best_weights = self.model.get_weights()
        else:
            wait += 1
        stager.records.set_plateau(best, wait)
        if wait >= schedule.patience and stager.index + 1 < len(stager.stages):
            self._advance(stager.index + 1, fit.epoch + 1)

    def _stage_ran_out(self, index: int, epoch: int) -> bool:
        """Whether stage ``index`` of a plateau schedule has run its ``max_stage_epochs`` by
        ``epoch`` (and a stage follows it). Read from the stage records, so a resumed run
        agrees."""
        limit = self.schedule.max_stage_epochs
        if limit is None or index + 1 >= len(self._stager.stages):
            return False
        began = self._stager.records.read()[0][1 + index]
        return began >= 0 and epoch - began >= limit

    def _advance(self, index: int, epoch: int) -> None:
        """Stage ``index`` of a plateau schedule begins at ``epoch``: the best weights (of the
        stage or of the run: ``best_scope``) come back first, and the wait restarts."""
        schedule, fit, records = self.schedule, self._fit, self._stager.records
        if schedule.restore_best_weights and fit.best_weights is not None:
            self.model.set_weights(fit.best_weights)
        elif schedule.restore_best_weights:
            warnings.warn(
                "ProgressiveUnfreeze could not restore the best weights: they were kept in "
                "memory by a process that has since been restarted. The next stage starts "
                "from the current weights.",
                stacklevel=3,
            )
        records.schedule_next(index, epoch)
        best, wait = records.plateau_state()
        if schedule.best_scope == "run" and wait >= 0:
            records.set_plateau(best, 0.0)  # the run's best is kept; the wait restarts
        else:
            fit.best_weights = None
            records.set_plateau(*NO_BEST)

    def on_train_end(self, logs=None):
        self._fit = None

    def get_config(self) -> dict:
        """The callback's configuration as plain JSON-able values."""
        from keras_tlft.discovery import locator_config

        return {
            "schedule": self.schedule.to_json(),
            **locator_config(self.backbone, self.blocks),
            "verbose": self.verbose,
            "resume_from": self.resume_from,
            "allow_empty_stages": self.allow_empty_stages,
        }

    @classmethod
    def from_config(cls, config: dict) -> ProgressiveUnfreeze:
        return cls(**config)

"""ProgressiveUnfreeze: staged unfreezing of a backbone inside one ``fit`` call.

The policy: which blocks train when and at which learning rates, read from a
:class:`~keras_tlft.schedule.Schedule`. The mechanics are elsewhere: what a stage change does to
the model, and the records that let a restarted run resume, in :mod:`keras_tlft.staging`; what it
needs from the optimizer (one build for every variable the schedule can unfreeze, per-variable
learning rates in the compiled step) in :mod:`keras_tlft.optim`; when a plateau schedule moves on
in :mod:`keras_tlft.plateau`; the checks and warnings as a fit begins in
:mod:`keras_tlft.fit_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from keras_tlft import _keras_compat as compat
from keras_tlft.callbacks import fit_checks
from keras_tlft.callbacks.compile_ahead import NAMES, CompileAhead, compile_ahead, why_not_ahead
from keras_tlft.callbacks.optim import StagedOptimizer
from keras_tlft.callbacks.plateau import PlateauTrigger
from keras_tlft.callbacks.stage_masks import (
    STAGE_CHANGES,
    last_stage,
    masking_plan,
    union_groups,
)
from keras_tlft.callbacks.staging import Stager
from keras_tlft.callbacks.traced_forward import TracedForward, why_not_traced
from keras_tlft.model.batchnorm import BN_ATTRIBUTE
from keras_tlft.model.discovery import (
    Backbone,
    blocks_argument,
    find_backbone,
    locate_backbone,
    locator_config,
)
from keras_tlft.schedules.plan import stage_at_epoch
from keras_tlft.schedules.presets import default_schedule
from keras_tlft.schedules.schedule import Schedule
from keras_tlft.schedules.schedule_input import parse_schedule

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


def record_in_history(model, values: dict) -> None:
    """Append ``values`` to the ``History`` of the running ``fit`` (``model.history``, which
    Keras sets to the fit's own before any callback runs), as if they had been in the logs."""
    history = getattr(model, "history", None)
    if isinstance(history, keras.callbacks.History):
        for key, value in values.items():
            history.history.setdefault(key, []).append(value)


def _true_or_false(name: str, value, error=ValueError) -> bool:
    """``value`` when it is a bool; else ``error`` naming the argument (the older arguments
    raise ``ValueError``, kept for their callers)."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False. Received: {name}={value!r}")
    return value


@dataclass
class _Fit:
    """The state of one ``fit`` call, created by ``on_train_begin``."""

    plateau: PlateauTrigger | None  # the plateau decisions, in a plateau schedule
    first_epoch: bool = True


class ProgressiveUnfreeze(keras.callbacks.Callback):
    """Unfreeze a backbone stage by stage, inside one `fit`, on every Keras backend.

    Each stage sets which blocks of the backbone train (`"none"`, `k` for the top k blocks,
    `"all"`, or `"from:INDEX|LAYER_NAME"`, as `keras-tlft inspect --unfreeze` shows) and at which
    learning rates; stages begin at given epochs, or when a monitored metric stops improving. No
    recompile, no second `fit`: the optimizer is built once for every variable the schedule can
    unfreeze, a stage change sets the `trainable` flags and retraces the train step, and each
    block's learning rate is a true one in the compiled step (for Adam too), so learning-rate
    schedules, `BackupAndRestore`, mixed precision and distribution strategies keep working.

    Each epoch records `unfreeze_stage`, `unfrozen_blocks`, `trainable_params`, `head_lr`,
    `backbone_lr` (the top unfrozen block's) and `backbone_lr_min` (the lowest's), the rates for
    the next step, in the `History` that `fit` returns (`history.history["unfreeze_stage"]`) and
    in this callback's `history`, but not in the epoch's `logs`: Keras's progress bar would print
    them as `0.0000e+00` and `2562.0000`. `log_details=True` puts them in `logs` too, for
    `CSVLogger`, `TensorBoard` and other callbacks (list this callback before them). A run
    restarted by `BackupAndRestore` resumes in the same stage, warm-up and plateau counters (with
    `save_freq=N`, the killed epoch's first batches train twice), in any order but for a plateau
    on a training metric (list this callback first). `StageEarlyStopping` stops in the last stage.

    BatchNormalization layers of unfrozen blocks follow `bn` (`keras_tlft.batchnorm`; applied at
    each `fit`, alike on Keras 3.13 to 3.16 and every backend): `"frozen"` (the default: as
    loaded), `"affine"` (gamma and beta train, the backbone in inference mode: Keras 2's
    `base_model(x, training=False)`) or `"train"` (moving statistics updated). Do not call the
    backbone with `training=False` yourself: Keras 3.15 and earlier override it in `fit`
    (keras-team/keras#20285), Keras 3.16 keeps it, for the head too.

    Args:
        schedule: when each stage begins: a mapping `{epoch: unfreeze}`, a preset
            (`"two_phase"`, `"fine_tune_at:layer=100,epoch=5"`, `"gradual:every=2"`,
            `"plateau:patience=2"`, `"lp_ft"`, `"ulmfit"`, `"layer_decay"`), the path of a
            JSON schedule file, or a `Schedule`. `None` (the default): the library's default
            schedule, the one `fine_tune` uses (`keras_tlft.presets.default_schedule`):
            `"gradual"`, one more block every epoch from epoch 1, the unfrozen blocks at a
            tenth of the head's rate (`backbone_lr_ratio=1` for keras-tlft 0.1's rates).
        backbone: `None` (the default) finds it (the layer `"backbone"` of a model from
            `build_model`, or the only nested model with weights); or a layer name (a nested
            model, or the last backbone layer when its layers sit directly in the model); or a
            layer (a nested model, or the base model of `Model(base.input, head(base.output))`).
        blocks: `None` (the default: the spec `build_model` attached, else the registered
            architecture whose block rules fit the layers, else derived from the layer names and
            printed), a registered backbone name, a list of `BlockRule` or
            `(name, pattern[, after])`, or a callable mapping a layer to its block's name.
        verbose: 0 (the default) is silent; 1 prints the blocks, how they were found, and one
            line per stage change.
        resume_from: the `.keras` file saved during fine-tuning with this schedule, whose
            weights, optimizer state (which `keras.saving.load_model` cannot place, and skips
            with a warning unless given `compile=False`) and stage records the callback loads
            once, at the first `fit`, into the model compiled as for the first run. The file is
            checked before any weight changes: a missing, unreadable or unrelated file is a
            `ValueError` naming it, and the model stays as it was. Defaults to `None`.
        allow_empty_stages: `False` (the default): a stage that trains no new parameter is a
            `ValueError` before training; `True` makes it a warning.
        log_details: `False` (the default): the six values go to the `History` only, and the
            progress bar stays as Keras prints it; `True`: into each epoch's `logs` as well.
        stage_change: `"auto"` (the default), `"retrace"` or `"mask"`: how a stage change
            reaches the compiled train step. `"retrace"` sets the trainable flags and retraces
            it (seconds on TensorFlow and JAX); `"mask"` traces one step for every block this
            fit reaches and trains a frozen block at a learning rate and gradient of 0, exactly
            as a retrace would, at the last stage's cost per step; `"auto"` masks short stages
            (`keras_tlft.callbacks.stage_masks.MASK_MAX_STEPS`) where that is exact. The
            choice and its reason: `callback.masking`.
        trace_backbone_once: `True` (the default): on TensorFlow, the nested backbone's forward
            pass is traced once per fit and every retrace reuses it, which takes 25-40% off
            a stage change and trains bit for bit alike (`keras_tlft.callbacks.traced_forward`
            says where it applies; `callback.traced_forward` says whether it did, or why
            not). `False`: every retrace walks the backbone's layers again, as in 0.2.
        compile_ahead: `True` (the default): on JAX and TensorFlow, the next stage's train
            step is traced once a stage's first step has begun, and compiled (XLA) or
            instantiated (TensorFlow) in a background thread while the stage trains, so that
            the stage change installs it instead of retracing (`keras_tlft.callbacks.
            compile_ahead` says where it applies; `callback.compiled_ahead` says whether it
            did, or why not). `False`: each stage is traced at its first step, as in 0.2.
        **options: any `Schedule` field, overriding the schedule's: `backbone_lr`,
            `backbone_lr_ratio`, `block_lr_decay`, `warmup_steps`, `bn` (`train_bn=True`: the
            old spelling of `bn="train"`), `reset_optimizer_state`, `trigger`, `monitor`,
            `patience`, `mode`, `min_delta`, `restore_best_weights`, `every`, `start`,
            `max_blocks`, `max_stage_epochs`, `best_scope`, `allow_refreeze` (a stage that
            trains fewer layers than the one before is refused without it), `stage_lr_shape`
            (`"slanted_triangular"`, ULMFiT's, needs the steps per epoch), `cut_frac`, `ratio`.

    Example:

    ```python
    model = keras_tlft.build_model("mobilenet_v2", num_classes=10)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    # The default schedule: one more block every epoch, at a tenth of the head's rate.
    model.fit(train, validation_data=val, epochs=12, callbacks=[ProgressiveUnfreeze()])
    # Or any other:
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

    def __init__(self, schedule=None, backbone=None, blocks=None, verbose=0, resume_from=None,
                 allow_empty_stages=False, log_details=False, stage_change="auto",
                 trace_backbone_once=True, compile_ahead=True, **options):
        super().__init__()
        if schedule is None:
            schedule = default_schedule()
        self.schedule: Schedule = parse_schedule(schedule, **options)
        if backbone is not None and not isinstance(backbone, (str, keras.layers.Layer)):
            raise ValueError("backbone must be None, a layer name or a Keras layer. "
                             f"Received: backbone={backbone!r}")
        self.backbone = backbone
        self.blocks = blocks_argument(blocks)
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2. Received: verbose={verbose!r}")
        self.verbose = verbose
        if resume_from is not None and not str(resume_from).endswith(".keras"):
            raise ValueError("resume_from must be None or the path of the .keras file the "
                             f"model was loaded from. Received: resume_from={resume_from!r}")
        self.resume_from = None if resume_from is None else str(resume_from)
        self.allow_empty_stages = _true_or_false("allow_empty_stages", allow_empty_stages)
        self.log_details = _true_or_false("log_details", log_details)
        if not isinstance(stage_change, str) or stage_change not in STAGE_CHANGES:
            raise ValueError("stage_change must be 'auto', 'retrace' or 'mask'. "
                             f"Received: stage_change={stage_change!r}")
        self.stage_change = stage_change
        self.trace_backbone_once = _true_or_false("trace_backbone_once", trace_backbone_once,
                                                  TypeError)
        self.compile_ahead = _true_or_false("compile_ahead", compile_ahead, TypeError)
        self.masking: tuple[bool, str] | None = None  # this fit's choice and why (on_train_begin)
        self.traced_forward: tuple[bool, str] | None = None  # likewise (traced_forward.py)
        self._forward: TracedForward | None = None
        self.compiled_ahead: tuple[bool, str] | None = None  # likewise (compile_ahead.py)
        self._ahead: CompileAhead | None = None
        self.history: dict[str, list] = {}  # the last fit's values per epoch, with "epoch"
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
        """The schedule's stages on this backbone (known once the model is set)."""
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
        """The ``ProgressiveUnfreeze`` that stages ``model`` (the last whose ``fit`` set it up;
        found through ``model.optimizer``, whatever the order of the callbacks), or ``None``."""
        staged = StagedOptimizer.of(getattr(model, "optimizer", None))
        return None if staged is None else staged.owner

    def set_model(self, model):
        super().set_model(model)
        # Build the optimizer for every variable the schedule can unfreeze *before* any
        # on_train_begin: BackupAndRestore loads its state there, or skips it on another count.
        self._stager = self._prepare(model) if getattr(model, "optimizer", None) else None
        if self._stager is not None:  # a new fit, unless a backup restored later says not
            self._stager.records.set_running(False)

    def _prepare(self, model) -> Stager:
        backbone = locate_backbone(model, self.backbone, self.blocks)
        stager = Stager(model, backbone, self.schedule, self.allow_empty_stages)
        if self.resume_from is not None and not self._resumed:
            fit_checks.check_resume_file(self.resume_from, model)  # before any weight changes
            self._resumed = stager.restore_optimizer(self.resume_from)  # once: later fits go on
            if self.verbose:
                compat.print_msg("ProgressiveUnfreeze: optimizer state and stage records "
                                 f"restored from {self.resume_from}")
        elif stager.state_skipped and model is not self._seen and self.resume_from is None:
            fit_checks.warn_state_skipped()
        built_with = getattr(model, BN_ATTRIBUTE, self.schedule.bn)
        if built_with != self.schedule.bn and model is not self._seen:
            fit_checks.warn_bn_mismatch(self.schedule.bn, built_with)
        self._seen = model
        # Keras sets the model of every callback of a fit before any on_train_begin: the last
        # ProgressiveUnfreeze to claim the optimizer is the one on_train_begin lets through.
        stager.staged.owner = self
        if self.verbose or backbone.blocks_source == "derived":  # derived blocks are a guess
            stager.print_blocks()
        if self.verbose:
            stager.print_optimizer_note()
        return stager

    def on_train_begin(self, logs=None):
        fit_checks.check_compiled(self.model)
        if self._stager is None:
            self._stager = self._prepare(self.model)
        fit_checks.check_one_owner(self, self._stager.staged.owner or self)
        self._stager.warn_late_stages((self.params or {}).get("epochs"))
        self._stager.fit_length = fit_checks.fit_length(self.schedule, self.params)
        self._stager.index = None
        self.history = {}
        start, why = masking_plan(self.stage_change, self._stager, self.model.optimizer,
                                  self.params)
        self.masking = (start is not None, why)
        if start is not None:
            last = last_stage(self._stager, self.params)
            self._stager.masks.activate(union_groups(self._stager, last),
                                        self.schedule.warmup_steps, start, last)
        else:
            self._stager.masks.deactivate()
        self._trace_forward_once()
        self._compile_ahead(start)
        if self.verbose:
            compat.print_msg(f"ProgressiveUnfreeze: stage changes "
                             f"{'by masking' if start is not None else 'retrace'}: {why}")
            traced, reason = self.traced_forward
            compat.print_msg("ProgressiveUnfreeze: the backbone's forward pass is traced once"
                             if traced else f"ProgressiveUnfreeze: the backbone's forward pass "
                             f"is traced at each retrace: {reason}")
            ahead, reason = self.compiled_ahead
            compat.print_msg("ProgressiveUnfreeze: each stage's train step compiles " + (
                "while the stage before it trains" if ahead else f"at its first step: {reason}"))
        self._fit = _Fit(PlateauTrigger(self.schedule, self._stager, self.model)
                         if self.schedule.trigger == "plateau" else None)

    def _trace_forward_once(self) -> None:
        self._untrace_forward()
        reason = ("trace_backbone_once=False" if not self.trace_backbone_once
                  else why_not_traced(self.model, self._stager.backbone.container))
        if reason is None:
            self._forward = TracedForward(self._stager.backbone.container)
        self.traced_forward = (reason is None, reason or "a nested backbone on TensorFlow")

    def _compile_ahead(self, masked_from) -> None:
        self._close_ahead()
        self._ahead = None
        reason = ("compile_ahead=False" if not self.compile_ahead
                  else why_not_ahead(self.model, self.schedule))
        if reason is None:
            self._ahead = compile_ahead(self._stager, self.params, masked_from)
        self._stager.ahead = self._ahead
        self.compiled_ahead = (reason is None, reason or f"{NAMES.get(keras.backend.backend())}, "
                               "an epoch schedule")

    def _close_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
        if self._stager is not None:
            self._stager.ahead = None

    def _untrace_forward(self) -> None:
        if self._forward is not None:
            self._forward.remove()
            self._forward = None

    def on_epoch_begin(self, epoch, logs=None):
        stager, fit = self._stager, self._fit
        if fit.first_epoch:
            stager.records.reconcile(epoch, self.schedule)
            fit.first_epoch = False
        target = (stage_at_epoch(stager.stages, epoch) if fit.plateau is None
                  else fit.plateau.stage_at(epoch))
        if target != stager.index:
            n_layers = stager.enter(target, epoch)
            if self.verbose:
                stager.announce(epoch, n_layers)
        stager.masks.hold_union(stager)  # the flags the compiled step was traced for

    def on_test_end(self, logs=None):
        if self._fit is not None and self._fit.plateau is not None:
            self._fit.plateau.test_ended(logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        if self._fit.plateau is not None:
            self._fit.plateau.epoch_ended(epoch, logs)
        self._stager.masks.show_exact(self._stager)  # the stage's own flags between epochs
        values = self._stager.log_values()
        for key, value in {"epoch": epoch, **values}.items():
            self.history.setdefault(key, []).append(value)
        if self.log_details:
            logs.update(values)  # History records them from the logs
        else:
            record_in_history(self.model, values)

    def on_train_end(self, logs=None):
        self._stager.masks.show_exact(self._stager)
        self._stager.masks.deactivate()
        self._untrace_forward()
        self._close_ahead()
        self._fit = None

    def get_config(self) -> dict:
        """The callback's configuration as plain JSON-able values."""
        return {
            "schedule": self.schedule.to_json(),
            **locator_config(self.backbone, self.blocks),
            "verbose": self.verbose,
            "resume_from": self.resume_from,
            "allow_empty_stages": self.allow_empty_stages,
            "log_details": self.log_details,
            "stage_change": self.stage_change,
            "trace_backbone_once": self.trace_backbone_once,
            "compile_ahead": self.compile_ahead,
        }

    @classmethod
    def from_config(cls, config: dict) -> ProgressiveUnfreeze:
        return cls(**config)

"""ProgressiveUnfreeze: staged unfreezing of a backbone inside one ``fit`` call.

The policy: which blocks train when and at which learning rates, read from a
:class:`~keras_tlft.schedule.Schedule`. The mechanism it needs from the optimizer (one build for
every variable the schedule can unfreeze, per-variable learning rates in the compiled step) is in
:mod:`keras_tlft.optim`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import keras
import numpy as np

from keras_tlft.blocks import apply_unfreeze, count_weights, trainable_flags_restored
from keras_tlft.discovery import (
    Backbone,
    blocks_argument,
    describe_source,
    find_backbone,
    locate_backbone,
)
from keras_tlft.optim import StagedOptimizer, retrace
from keras_tlft.plan import describe_trigger, learning_rate_rules, stage_at_epoch, stage_error
from keras_tlft.schedule import MAX_STAGES, Schedule, parse_schedule

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


def _print(message: str) -> None:
    try:
        from keras.src.utils import io_utils

        io_utils.print_msg(message)
    except ImportError:  # pragma: no cover - a Keras without io_utils
        print(message)


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
    `val_*`) needs this callback listed before `BackupAndRestore`.

    BatchNormalization layers stay frozen by default, which is what keeps them in inference
    mode: in Keras 3 a nested model called with `training=False` still runs its *trainable*
    BatchNorm layers in training mode during `fit`.

    Args:
        schedule: when each stage begins: a mapping `{epoch: unfreeze}`, a preset
            (`"two_phase"`, `"fine_tune_at:layer=100,epoch=5"`, `"gradual:every=2"`,
            `"plateau:patience=2"`), the path of a JSON schedule file, or a `Schedule`.
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
            `backbone_lr_ratio`, `block_lr_decay`, `warmup_steps`, `train_bn`,
            `reset_optimizer_state`, `trigger`, `monitor`, `patience`, `mode`, `min_delta`,
            `restore_best_weights`, `every`, `start`, `max_blocks`.

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
        self._resumed = False
        self._seen = None  # the model of the last fit: recompiled, it is no loaded model
        if not isinstance(allow_empty_stages, bool):
            raise ValueError(
                "allow_empty_stages must be True or False. "
                f"Received: allow_empty_stages={allow_empty_stages!r}"
            )
        self.allow_empty_stages = allow_empty_stages
        self._prepared = False
        self._in_epoch = False  # on_test_end also runs in a plain evaluate()

    # ------------------------------------------------------------------ set-up

    def set_model(self, model):
        super().set_model(model)
        self._prepared = False
        # Build the optimizer for every variable the schedule can unfreeze *before* any
        # callback's on_train_begin: BackupAndRestore loads the optimizer's state there, and
        # Keras skips that load when the optimizer's variable count differs.
        if getattr(model, "optimizer", None) is not None:
            self._prepare()

    def _prepare(self) -> None:
        model = self.model
        self.found = locate_backbone(model, self.backbone, self.blocks)
        layers, blocks, source = self.found.layers, self.found.blocks, self.found.blocks_source
        self.stages = self.schedule.resolve(len(blocks))
        self._block_of = np.zeros(len(layers), dtype=int)
        for b, block in enumerate(blocks):
            self._block_of[block.first : block.last + 1] = b
        # Blocks derived from layer names are a guess: always show it (known ones with verbose).
        if self.verbose or source == "derived":
            self._print_blocks()
        trained_now = {id(v) for layer in layers for v in layer.trainable_weights}
        union = self._union_variables()
        # Saved past its first stage, then loaded: Keras built the optimizer and skipped its
        # state. (On JAX, fit itself builds the optimizer before this, but for a model in its
        # first stage, as a new one is.)
        built_elsewhere = (self._built_without_steps(model) and model is not self._seen
                           and not trained_now <= self._stage_trained[0])
        self._seen = model
        self.staged = StagedOptimizer.install(model)
        self.staged.build(union)
        self._state_epochs = self.staged.state_variable(
            "tlft_stage_epochs", (MAX_STAGES + 1,), "int32", -1)
        self._state_iterations = self.staged.state_variable(
            "tlft_stage_iterations", (MAX_STAGES,), "int32", -1)
        self._state_plateau = self.staged.state_variable("tlft_plateau", (2,), "float32", 0.0)
        if self.resume_from is not None and not self._resumed:
            self._restore_optimizer(self.resume_from)
            self._resumed = True  # once: a later fit with this callback goes on from there
        elif built_elsewhere and self.resume_from is None:
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
        self._stage_blocks_cache: dict[int, set[int]] = {}
        self._prepared = True

    @staticmethod
    def _built_without_steps(model) -> bool:
        from keras_tlft.optim import innermost_optimizer

        inner = innermost_optimizer(model.optimizer)
        return (inner.built and getattr(inner, "_tlft_staged", None) is None
                and int(keras.ops.convert_to_numpy(inner.iterations)) == 0)

    def _restore_optimizer(self, path: str) -> None:
        """Load the optimizer variables saved in ``path`` into the optimizer, now built with the
        layout it had when the file was saved (``Model.load_weights`` of a ``.keras`` file loads
        the optimizer too; Keras warns and skips it when the variable counts differ)."""
        expected = len(self.model.optimizer.variables)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.model.load_weights(path)
        skipped = [w for w in caught if "Skipping variable loading for optimizer" in str(w.message)]
        for w in caught:
            if w not in skipped:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not skipped and self.verbose:
            _print(f"ProgressiveUnfreeze: optimizer state and stage records restored from {path}")
        if skipped:
            raise ValueError(
                f"Cannot restore the optimizer state saved in {path}: {skipped[0].message} "
                f"Expected a file saved during a fit with this callback, this schedule and this "
                f"optimizer ({expected} optimizer variables here). Received: resume_from={path!r}"
            )

    def _apply(self, stage):
        bb = self.found
        return apply_unfreeze(bb.layers, bb.blocks, stage.unfreeze, self.schedule.train_bn,
                              bb.container)

    def _union_variables(self) -> list:
        """Every variable some stage trains, in the model's order (so that a resumed run builds
        the optimizer exactly as the interrupted one did)."""
        bb = self.found
        union: set[int] = set()
        previous: set[int] = set()
        self._stage_trained = []
        with trainable_flags_restored(bb.layers, bb.container):
            for i, stage in enumerate(self.stages):
                try:
                    unfrozen = self._apply(stage)
                except ValueError as exc:
                    raise stage_error(self.schedule, i, stage, exc) from None
                union.update(id(v) for v in self.model.trainable_variables)
                trained = {id(v) for layer in bb.layers for v in layer.trainable_weights}
                self._stage_trained.append(trained)
                asked = stage.unfreeze.kind != "none" and (
                    i == 0 or stage.unfreeze != self.stages[i - 1].unfreeze)
                if asked and (not trained or trained == previous):
                    self._empty_stage(i, stage, unfrozen, previous)
                previous = trained
        ordered = [v for v in self.model.variables if id(v) in union]
        seen: set[int] = set()
        return [v for v in ordered if not (id(v) in seen or seen.add(id(v)))]

    def _empty_stage(self, index, stage, unfrozen, previous) -> None:
        """A stage that asks for more blocks but trains no new parameter: an error, or a
        warning with ``allow_empty_stages=True``."""
        bb = self.found
        blocks = sorted({int(self._block_of[i]) for i in unfrozen})
        earlier = {int(self._block_of[i]) for i, layer in enumerate(bb.layers)
                   if any(id(v) in previous for v in layer.weights)}
        new = [bb.blocks[b] for b in blocks if b not in earlier] or [bb.blocks[b] for b in blocks]
        shown = ", ".join(
            f"{b.name} [{', '.join(bb.layers[j].name for j in list(b.indices())[:4])}"
            f"{', ...' if b.last - b.first >= 4 else ''}]" for b in new[:3])
        where = f"epoch {stage.epoch}" if stage.epoch is not None else f"stage {index}"
        message = (
            f"ProgressiveUnfreeze stage {index + 1} ({where}, unfreeze={stage.unfreeze}) trains "
            f"no new parameter: its blocks ({shown}) hold no weights, or only BatchNormalization "
            f"layers, which stay frozen unless train_bn=True (blocks {describe_source(bb)}). "
            "Expected every stage to train more than the one before: pass blocks= (a registered "
            "backbone name, a list of BlockRule, or a callable) so that each block holds weights, "
            "or unfreeze 'from:LAYER_NAME' at a layer with weights; allow_empty_stages=True if "
            f"this is on purpose. Received: schedule={self.schedule.to_json()!r}"
        )
        if not self.allow_empty_stages:
            raise ValueError(message)
        warnings.warn(message, stacklevel=4)

    def _print_blocks(self) -> None:
        bb = self.found
        rows = ", ".join(f"{b.name} [{b.first}-{b.last}]" for b in bb.blocks)
        _print(f"ProgressiveUnfreeze: backbone {bb.name!r}, {len(bb.layers)} layers in "
               f"{len(bb.blocks)} blocks ({describe_source(bb)}): {rows}")

    # ------------------------------------------------------------------ persisted state

    def _records(self):
        epochs = keras.ops.convert_to_numpy(self._state_epochs).astype(int)
        iterations = keras.ops.convert_to_numpy(self._state_iterations).astype(int)
        return epochs, iterations

    def _write_records(self, epochs, iterations) -> None:
        self._state_epochs.assign(np.asarray(epochs, dtype="int32"))
        self._state_iterations.assign(np.asarray(iterations, dtype="int32"))

    def _reconcile(self, epoch: int) -> None:
        """On the first epoch of a `fit`: a run resumed at ``epoch`` keeps the records of the
        stages begun up to it; a new run (epoch 0, or another schedule) starts afresh."""
        epochs, iterations = self._records()
        fingerprint = self.schedule.fingerprint()
        if epoch == 0 or epochs[0] != fingerprint:
            epochs[:] = -1
            iterations[:] = -1
            epochs[0] = fingerprint
            self._state_plateau.assign(np.array([np.nan, 0.0], dtype="float32"))
        later = epochs[1:] > epoch
        epochs[1:][later] = -1
        iterations[later] = -1
        if self.schedule.trigger == "plateau" and epochs[1] == -1:
            epochs[1] = epoch
        self._write_records(epochs, iterations)

    def _iteration(self) -> int:
        return int(keras.ops.convert_to_numpy(self.staged.inner.iterations))

    # ------------------------------------------------------------------ callback hooks

    def on_train_begin(self, logs=None):
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError(
                "ProgressiveUnfreeze needs a compiled model: call model.compile(optimizer, "
                "loss) before fit. Received: model.optimizer=None"
            )
        if not self._prepared:
            self._prepare()
        self._stage = None
        self._first_epoch = True
        self._in_epoch = False
        self._best_weights = None
        self._monitor_seen = False
        self._warned_monitor = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self._reconcile(epoch)
            self._first_epoch = False
        self._in_epoch = True
        self._epoch = epoch
        target = self._stage_at(epoch)
        if target != self._stage:
            self._enter(target, epoch)

    def _stage_at(self, epoch: int) -> int:
        if self.schedule.trigger == "epoch":
            return stage_at_epoch(self.stages, epoch)
        epochs, _ = self._records()
        begun = [i for i in range(len(self.stages)) if 0 <= epochs[1 + i] <= epoch]
        return max(begun) if begun else 0

    def _enter(self, index: int, epoch: int) -> None:
        epochs, iterations = self._records()
        fresh = iterations[index] < 0
        if fresh:
            epochs[1 + index] = epoch
            iterations[index] = self._iteration()
            self._write_records(epochs, iterations)
            if self.schedule.reset_optimizer_state and index > 0:
                self.staged.reset_state()
        self._stage = index
        stage = self.stages[index]
        unfrozen = self._apply(stage)
        self._set_learning_rates(index, iterations)
        retrace(self.model)
        self._trainable_params = count_weights(self.model.trainable_weights)
        blocks = sorted({int(self._block_of[i]) for i in unfrozen})
        self._unfrozen_blocks = blocks
        if self.verbose:
            self._announce(epoch, index, stage, blocks, len(unfrozen))

    def _run_start(self, index: int, block: int, iterations) -> int | None:
        """The iteration since which ``block`` has trained without a break, as of stage
        ``index`` (the warm-up of a block starts when it is unfrozen)."""
        start = index
        while start > 0 and block in self._stage_blocks(start - 1):
            start -= 1
        value = int(iterations[start])
        return value if value >= 0 else None

    def _stage_blocks(self, index: int) -> set[int]:
        cache = self._stage_blocks_cache
        if index not in cache:
            bb = self.found
            with trainable_flags_restored(bb.layers, bb.container):
                unfrozen = self._apply(self.stages[index])
            cache[index] = {int(self._block_of[i]) for i in unfrozen}
        return cache[index]

    def _set_learning_rates(self, index: int, iterations) -> None:
        bb = self.found
        stage = self.stages[index]
        head_rule, block_rules = learning_rate_rules(self.schedule, stage, len(bb.blocks))
        backbone_ids = set()
        per_block: dict[int, list] = {}
        for i, layer in enumerate(bb.layers):
            for v in layer.trainable_weights:
                backbone_ids.add(id(v))
                per_block.setdefault(int(self._block_of[i]), []).append(v)
        rules = []
        warmup = self.schedule.warmup_steps
        self._block_rules = {}
        for b, variables in per_block.items():
            rule = block_rules[b]
            if warmup:
                rule = replace(rule, warmup_steps=warmup,
                               warmup_start=self._run_start(index, b, iterations))
            self._block_rules[b] = rule
            rules.append((variables, rule))
        head = [v for v in self.model.trainable_weights if id(v) not in backbone_ids]
        rules.append((head, head_rule))
        self._head_rule = head_rule
        self.staged.set_rules(rules)

    def _announce(self, epoch, index, stage, blocks, n_layers) -> None:
        bb = self.found
        names = [bb.blocks[b].name for b in blocks]
        what = (f"{len(names)} block{'s' if len(names) != 1 else ''} "
                f"({names[0]}..{names[-1]}), {n_layers} layers" if names else "backbone frozen")
        lrs = self._learning_rates(2**62)  # the full rates, after any warm-up
        lr_text = f"head lr {lrs['head_lr']:.3g}"
        if names:
            lr_text += f", backbone lr {lrs['backbone_lr']:.3g}"
            if lrs["backbone_lr_min"] != lrs["backbone_lr"]:
                lr_text += f"..{lrs['backbone_lr_min']:.3g}"
            if self.schedule.warmup_steps:
                lr_text += f" (after a {self.schedule.warmup_steps}-step warm-up)"
        trigger = describe_trigger(self.schedule, index, stage)
        _print(f"Epoch {epoch + 1}: ProgressiveUnfreeze stage {index + 1}/{len(self.stages)} "
               f"(unfreeze={stage.unfreeze}, {trigger}): {what}, "
               f"{self._trainable_params:,} trainable params; {lr_text}")

    def _learning_rates(self, iteration: int) -> dict:
        """The head's and the top and lowest unfrozen blocks' learning rates at ``iteration``."""
        lr = float(keras.ops.convert_to_numpy(self.staged.inner.learning_rate))
        rates = [self._block_rules[b].value(lr, iteration) for b in self._unfrozen_blocks
                 if b in self._block_rules]
        return {
            "head_lr": self._head_rule.value(lr, iteration),
            "backbone_lr": rates[-1] if rates else 0.0,
            "backbone_lr_min": rates[0] if rates else 0.0,
        }

    def on_test_end(self, logs=None):
        # A val_ metric is known here, before any callback's on_epoch_end: a decision taken now
        # is in the optimizer's state when BackupAndRestore saves it, whatever the order.
        monitor = self.schedule.monitor
        if (self.schedule.trigger == "plateau" and self._in_epoch and logs
                and monitor.startswith("val_") and monitor[4:] in logs):
            self._observe(float(logs[monitor[4:]]))

    def on_epoch_end(self, epoch, logs=None):
        self._in_epoch = False
        logs = {} if logs is None else logs
        monitor = self.schedule.monitor
        if self.schedule.trigger == "plateau":
            if not monitor.startswith("val_") and monitor in logs:
                self._observe(float(logs[monitor]))
            if monitor in logs:
                self._monitor_seen = True
            elif not self._monitor_seen and not self._warned_monitor and epoch > 0:
                self._warned_monitor = True
                warnings.warn(
                    f"ProgressiveUnfreeze's plateau schedule watches {monitor!r}, which is not "
                    f"in the logs (available: {', '.join(sorted(logs)) or 'none'}): the next "
                    f"stage will not begin. Pass validation_data to fit, or monitor= one of "
                    f"the available metrics.",
                    stacklevel=2,
                )
        logs.update(self._log_values())

    def _log_values(self) -> dict:
        values = {
            "unfreeze_stage": self._stage,
            "unfrozen_blocks": len(self._unfrozen_blocks),
            "trainable_params": self._trainable_params,
        }
        # The rates in force now, for the next step (as ReduceLROnPlateau logs its own).
        values.update(self._learning_rates(self._iteration()))
        return values

    def _observe(self, value: float) -> None:
        """One epoch's value of the monitored metric, in a plateau schedule."""
        value = float(np.float32(value))
        best, wait = (float(x) for x in keras.ops.convert_to_numpy(self._state_plateau))
        sign = -1.0 if self.schedule.resolved_mode() == "min" else 1.0
        if math.isnan(best) or sign * (value - best) > self.schedule.min_delta:
            best, wait = value, 0
            if self.schedule.restore_best_weights:
                self._best_weights = self.model.get_weights()
        else:
            wait += 1
        if wait >= self.schedule.patience and self._stage + 1 < len(self.stages):
            if self.schedule.restore_best_weights and self._best_weights is not None:
                self.model.set_weights(self._best_weights)
            elif self.schedule.restore_best_weights:
                warnings.warn(
                    "ProgressiveUnfreeze could not restore this stage's best weights: they were "
                    "kept in memory by a process that has since been restarted. The next stage "
                    "starts from the current weights.",
                    stacklevel=2,
                )
            self._best_weights = None
            epochs, iterations = self._records()
            epochs[1 + self._stage + 1] = self._epoch + 1
            self._write_records(epochs, iterations)
            best, wait = math.nan, 0
        self._state_plateau.assign(np.array([best, wait], dtype="float32"))

    def on_train_end(self, logs=None):
        self._in_epoch = False
        self._best_weights = None

    # ------------------------------------------------------------------ config

    def get_config(self) -> dict:
        """The callback's configuration as plain JSON-able values."""
        backbone = self.backbone.name if isinstance(self.backbone, keras.layers.Layer) \
            else self.backbone
        blocks = self.blocks
        if isinstance(blocks, tuple):
            blocks = [[r.name, r.pattern, r.after] for r in blocks]
        elif callable(blocks):
            blocks = {"callable": f"{blocks.__module__}:{blocks.__qualname__}"}
        return {
            "schedule": self.schedule.to_json(),
            "backbone": backbone,
            "blocks": blocks,
            "verbose": self.verbose,
            "resume_from": self.resume_from,
            "allow_empty_stages": self.allow_empty_stages,
        }

    @classmethod
    def from_config(cls, config: dict) -> ProgressiveUnfreeze:
        config = dict(config)
        blocks = config.get("blocks")
        if isinstance(blocks, dict) and "callable" in blocks:
            import importlib

            module, _, qualname = blocks["callable"].partition(":")
            value = importlib.import_module(module)
            for part in qualname.split("."):
                value = getattr(value, part)
            config["blocks"] = value
        return cls(**config)

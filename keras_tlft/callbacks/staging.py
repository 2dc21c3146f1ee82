"""The mechanics of a :class:`~keras_tlft.ProgressiveUnfreeze` run, apart from its policy.

:class:`Stager` does what a stage change does to a model (trainable flags, each block's learning
rate, one retrace) on top of :class:`~keras_tlft.optim.StagedOptimizer`, keeping what the run
has done so far in :class:`~keras_tlft.callbacks.stage_records.StageRecords`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace

import keras
import numpy as np

from keras_tlft import _keras_compat as compat
from keras_tlft.callbacks.optim import StagedOptimizer, innermost_optimizer, retrace
from keras_tlft.callbacks.stage_masks import StageMasks
from keras_tlft.callbacks.stage_records import StageRecords
from keras_tlft.model.blocks import apply_unfreeze, count_weights, trainable_flags_restored
from keras_tlft.model.discovery import Backbone, describe_source
from keras_tlft.schedules.plan import (
    describe_trigger,
    learning_rate_rules,
    refrozen_blocks,
    stage_error,
    stage_lr_shape,
)
from keras_tlft.schedules.schedule import Schedule

__all__ = ["StageRecords", "Stager"]


class Stager:
    """A model's backbone stage by stage: the optimizer built once for every variable the
    schedule can unfreeze, then :meth:`enter` for each stage change.

    Args:
        model: the compiled model.
        backbone: where its backbone is (:func:`keras_tlft.discovery.locate_backbone`).
        schedule: the schedule.
        allow_empty_stages: a stage that trains no new parameter is a warning, not an error.
    """

    def __init__(self, model, backbone: Backbone, schedule: Schedule,
                 allow_empty_stages: bool = False):
        self.model, self.backbone, self.schedule = model, backbone, schedule
        self.allow_empty_stages = allow_empty_stages
        self.stages = schedule.resolve(len(backbone.blocks))
        self.block_of = np.zeros(len(backbone.layers), dtype=int)
        for b, block in enumerate(backbone.blocks):
            self.block_of[block.first : block.last + 1] = b
        trained_now = {id(v) for layer in backbone.layers for v in layer.trainable_weights}
        built_without_steps = _built_without_steps(model.optimizer)
        union = self.union_variables()
        # Built but never stepped, and trainable exactly as a later stage leaves the model: one
        # saved past its first stage and loaded (Keras built the optimizer and skipped its
        # saved state). On JAX and PyTorch fit builds a new model's optimizer before any
        # callback sees it: a model trainable in its own way (a whole backbone) is no sign.
        self.state_skipped = built_without_steps and trained_now != self.stage_trained[0] and (
            trained_now in self.stage_trained[1:])
        self.staged = StagedOptimizer.install(model)
        self.staged.build(union)
        self.records = StageRecords(self.staged)
        self.masks = self.staged.masks = StageMasks(self.staged, len(backbone.blocks))
        self.ahead = None  # a CompileAhead (compile_ahead.py) while a fit uses one
        self._stage_blocks: dict[int, set[int]] = {}
        # The stage in force (set by enter).
        self.index: int | None = None
        self.unfrozen_blocks: list[int] = []
        self.trainable_params = 0
        self.head_rule = None
        self.block_rules: dict = {}
        # (epochs, steps per epoch) of the fit under way, for a slanted triangular shape.
        self.fit_length: tuple[int, int] | None = None

    def apply(self, index: int) -> range:
        """Set the trainable flags of stage ``index``; returns the unfrozen layer indices."""
        bb = self.backbone
        return apply_unfreeze(bb.layers, bb.blocks, self.stages[index].unfreeze,
                              self.schedule.bn, bb.container)

    @contextlib.contextmanager
    def flags_of(self, index: int):
        """Stage ``index``'s trainable flags inside the ``with`` block (it yields the unfrozen
        layer indices), and the flags as they were after it."""
        bb = self.backbone
        with trainable_flags_restored(bb.layers, bb.container):
            yield self.apply(index)

    def union_variables(self) -> list:
        """Every variable some stage trains, in the model's order (so that a resumed run builds
        the optimizer exactly as the interrupted one did)."""
        bb = self.backbone
        union: set[int] = set()
        previous: set[int] = set()
        before = range(0)
        self.stage_trained = []  # per stage, the backbone variables it trains
        with trainable_flags_restored(bb.layers, bb.container):
            for i, stage in enumerate(self.stages):
                try:
                    unfrozen = self.apply(i)
                except ValueError as exc:
                    raise stage_error(self.schedule, i, stage, exc) from None
                refrozen_blocks(self.schedule, i, stage, bb.blocks, unfrozen, before)
                before = unfrozen
                union.update(id(v) for v in self.model.trainable_variables)
                trained = {id(v) for layer in bb.layers for v in layer.trainable_weights}
                self.stage_trained.append(trained)
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
        bb = self.backbone
        blocks = sorted({int(self.block_of[i]) for i in unfrozen})
        earlier = {int(self.block_of[i]) for i, layer in enumerate(bb.layers)
                   if any(id(v) in previous for v in layer.weights)}
        new = [bb.blocks[b] for b in blocks if b not in earlier] or [bb.blocks[b] for b in blocks]
        shown = ", ".join(
            f"{b.name} [{', '.join(bb.layers[j].name for j in list(b.indices())[:4])}"
            f"{', ...' if b.last - b.first >= 4 else ''}]" for b in new[:3])
        where = f"epoch {stage.epoch}" if stage.epoch is not None else f"stage {index}"
        message = (
            f"ProgressiveUnfreeze stage {index + 1} ({where}, unfreeze={stage.unfreeze}) trains "
            f"no new parameter: its blocks ({shown}) hold no weights, or only BatchNormalization "
            f"layers, which stay frozen under bn='frozen' (blocks {describe_source(bb)}). "
            "Expected every stage to train more than the one before: pass blocks= (a registered "
            "backbone name, a list of BlockRule, or a callable) so that each block holds weights, "
            "or unfreeze 'from:LAYER_NAME' at a layer with weights; allow_empty_stages=True if "
            f"this is on purpose. Received: schedule={self.schedule.to_json()!r}"
        )
        if not self.allow_empty_stages:
            raise ValueError(message)
        warnings.warn(message, stacklevel=5)

    def restore_optimizer(self, path: str) -> bool:
        """Load the optimizer variables saved in ``path`` (a ``.keras`` file saved during a fit
        with this schedule) into the optimizer, built now with the layout it had then
        (``Model.load_weights`` of a ``.keras`` file loads the optimizer too; Keras warns and
        skips it when the variable counts differ). Raises ``ValueError`` when Keras skips it."""
        expected = len(self.model.optimizer.variables)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.model.load_weights(path)  # after fit_checks.check_resume_file
        skipped = [w for w in caught if "Skipping variable loading for optimizer" in str(w.message)]
        for w in caught:
            if w not in skipped:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if skipped:
            raise ValueError(
                f"Cannot restore the optimizer state saved in {path}: {skipped[0].message} "
                f"Expected a file saved during a fit with this callback, this schedule and this "
                f"optimizer ({expected} optimizer variables here). Received: resume_from={path!r}"
            )
        return True

    def enter(self, index: int, epoch: int) -> int:
        """Make stage ``index`` the one in force from ``epoch``; returns its unfrozen layer
        count."""
        if self.records.begin(index, epoch) and self.schedule.reset_optimizer_state and index:
            self.staged.reset_state()
        self.index = index
        unfrozen = self.apply(index)
        self.unfrozen_blocks = sorted({int(self.block_of[i]) for i in unfrozen})
        self._set_learning_rates(index)
        self.trainable_params = count_weights(self.model.trainable_weights)
        # A masked run's later stages need no retrace; with compile_ahead (JAX) the stage's
        # step may have been compiled while the last stage trained.
        if not self.masks.enter(self) and not (self.ahead and self.ahead.enter(index, epoch)):
            retrace(self.model)
        return len(unfrozen)

    def blocks_of_stage(self, index: int) -> set[int]:
        """The blocks stage ``index`` trains (the flags are put back)."""
        if index not in self._stage_blocks:
            with self.flags_of(index) as unfrozen:
                self._stage_blocks[index] = {int(self.block_of[i]) for i in unfrozen}
        return self._stage_blocks[index]

    def _run_start(self, index: int, block: int, iterations) -> int | None:
        """The iteration since which ``block`` has trained without a break, as of stage
        ``index`` (the warm-up of a block starts when it is unfrozen)."""
        start = index
        while start > 0 and block in self.blocks_of_stage(start - 1):
            start -= 1
        value = int(iterations[start])
        return value if value >= 0 else None

    def _set_learning_rates(self, index: int) -> None:
        epochs, iterations = self.records.read()
        self.head_rule, self.block_rules, rules = self.rules_of(index, epochs, iterations)
        self.staged.set_rules(rules)

    def rules_of(self, index: int, epochs, iterations) -> tuple:
        """``(head_rule, block_rules, rules)`` of stage ``index`` given the stage records
        ``(epochs, iterations)``, under that stage's flags (``rules``: for
        :meth:`StagedOptimizer.set_rules`)."""
        bb = self.backbone
        head_rule, block_rules = learning_rate_rules(self.schedule, self.stages[index],
                                                     len(bb.blocks))
        shape = None
        if self.fit_length is not None:
            shape = stage_lr_shape(self.schedule, self.stages, index, int(epochs[1 + index]),
                                   int(iterations[index]), *self.fit_length)
        head_rule = replace(head_rule, shape=shape)
        backbone_ids = set()
        per_block: dict[int, list] = {}
        for i, layer in enumerate(bb.layers):
            for v in layer.trainable_weights:
                backbone_ids.add(id(v))
                per_block.setdefault(int(self.block_of[i]), []).append(v)
        warmup = self.schedule.warmup_steps
        rules_of_blocks = {}
        rules = []
        for b, variables in per_block.items():
            rule = replace(block_rules[b], shape=shape)
            if warmup:
                rule = replace(rule, warmup_steps=warmup,
                               warmup_start=self._run_start(index, b, iterations))
            rules_of_blocks[b] = rule
            rules.append((variables, rule))
        head = [v for v in self.model.trainable_weights if id(v) not in backbone_ids]
        rules.append((head, head_rule))
        return head_rule, rules_of_blocks, rules

    def learning_rates(self, iteration: int | None) -> dict:
        """The head's and the top and lowest unfrozen blocks' learning rates at ``iteration``
        (``None``: their peaks, after any warm-up and at the top of any slanted triangle)."""
        lr = float(keras.ops.convert_to_numpy(self.staged.inner.learning_rate))

        def value(rule):
            return rule.peak(lr) if iteration is None else rule.value(lr, iteration)

        rates = [value(self.block_rules[b]) for b in self.unfrozen_blocks
                 if b in self.block_rules]
        return {
            "head_lr": value(self.head_rule),
            "backbone_lr": rates[-1] if rates else 0.0,
            "backbone_lr_min": rates[0] if rates else 0.0,
        }

    def log_values(self) -> dict:
        """What each epoch's logs gain: the stage and the rates in force for the next step (as
        ReduceLROnPlateau logs its own)."""
        return {
            "unfreeze_stage": self.index,
            "unfrozen_blocks": len(self.unfrozen_blocks),
            "trainable_params": self.trainable_params,
            **self.learning_rates(self.records.iteration()),
        }

    def print_optimizer_note(self) -> None:
        variables = self.model.optimizer.variables  # what model.summary() counts
        compat.print_msg(
            f"ProgressiveUnfreeze: optimizer {self.staged.inner.name!r} built for every weight "
            f"the schedule can unfreeze: {len(variables)} variables, "
            f"{count_weights(variables):,} parameters, which model.summary() counts as "
            f"'Optimizer params' (and in its total) from the start."
        )

    def warn_late_stages(self, epochs) -> None:
        """Warn when stages of an epoch schedule begin after the last of ``epochs``."""
        if self.schedule.trigger != "epoch" or not isinstance(epochs, int):
            return
        late = [s for s in self.stages if s.epoch >= epochs]
        if not late:
            return
        named = ", ".join(f"unfreeze={s.unfreeze} at epoch {s.epoch}" for s in late[:3])
        more = f" and {len(late) - 3} more" if len(late) > 3 else ""
        fix = ("Fit for more epochs, or set max_blocks or a smaller every."
               if not self.schedule.stages else
               "Fit for more epochs, or begin those stages earlier.")
        warnings.warn(
            f"ProgressiveUnfreeze: {len(late)} of the schedule's {len(self.stages)} stages "
            f"begin after the last epoch of this fit (epochs={epochs}; epochs count from 0, "
            f"so the last is epoch {epochs - 1}) and will never run: {named}{more}. {fix}",
            stacklevel=3,
        )

    def print_blocks(self) -> None:
        bb = self.backbone
        rows = ", ".join(f"{b.name} [{b.first}-{b.last}]" for b in bb.blocks)
        compat.print_msg(f"ProgressiveUnfreeze: backbone {bb.name!r}, {len(bb.layers)} layers in "
                         f"{len(bb.blocks)} blocks ({describe_source(bb)}): {rows}")

    def announce(self, epoch: int, n_layers: int) -> None:
        """One line for a stage change."""
        index, stage = self.index, self.stages[self.index]
        names = [self.backbone.blocks[b].name for b in self.unfrozen_blocks]
        what = (f"{len(names)} block{'s' if len(names) != 1 else ''} "
                f"({names[0]}..{names[-1]}), {n_layers} layers" if names else "backbone frozen")
        lrs = self.learning_rates(None)  # the full rates: after any warm-up, at the peak
        lr_text = f"head lr {lrs['head_lr']:.3g}"
        if names:
            lr_text += f", backbone lr {lrs['backbone_lr']:.3g}"
            if lrs["backbone_lr_min"] != lrs["backbone_lr"]:
                lr_text += f"..{lrs['backbone_lr_min']:.3g}"
            if self.schedule.warmup_steps:
                lr_text += f" (after a {self.schedule.warmup_steps}-step warm-up)"
        if self.schedule.stage_lr_shape != "constant":
            lr_text += " at the peak of the stage's slanted triangle"
        trigger = describe_trigger(self.schedule, index, stage)
        compat.print_msg(
            f"Epoch {epoch + 1}: ProgressiveUnfreeze stage {index + 1}/{len(self.stages)} "
            f"(unfreeze={stage.unfreeze}, {trigger}): {what}, "
            f"{self.trainable_params:,} trainable params; {lr_text}"
        )


def _built_without_steps(optimizer) -> bool:
    """Whether ``optimizer`` was built (by Keras, not by a ProgressiveUnfreeze) and never
    stepped: what ``keras.saving.load_model`` leaves when it skips a saved optimizer state."""
    inner = innermost_optimizer(optimizer)
    return (inner.built and getattr(inner, "_tlft_staged", None) is None
            and int(keras.ops.convert_to_numpy(inner.iterations)) == 0)

"""Stage changes without a retrace: every block a schedule will train is in the compiled step
from its first unfreezing stage on, and a frozen block trains at a learning rate of 0.

A stage change normally sets the ``trainable`` flags and retraces the train step (about 3 s on
TensorFlow for MobileNetV2 at 96x96 on a 2-core CPU, more on JAX, which recompiles). With
:class:`StageMasks` the step is traced once for the *union* of the blocks the schedule trains;
each group of variables (the head, each block) reads its learning rate from one optimizer
variable (``absolute + scale * learning_rate``, then its warm-up), and a frozen block's rate and
gradient are 0, so it moves by exactly nothing and its optimizer moments stay at zero, as if it
had not been in the step. A stage change then only writes that table.

The price: every step computes the gradients of every block the schedule will train, so a stage
that trains a few blocks steps at the cost of the last stage. :func:`masking_plan` decides: only
when the stages are short enough for the saved retraces to outweigh it (or when asked), and only
where the result is the same as a retrace's (the exceptions are in ``_blocker``).
"""

from __future__ import annotations

import numpy as np

from keras_tlft import _keras_compat as compat

__all__ = ["MASK_MAX_STEPS", "STAGE_CHANGES", "StageMasks", "last_stage", "masking_plan",
           "union_groups"]

STAGE_CHANGES = ("auto", "retrace", "mask")
# "auto" masks the stages that last at most this many steps, per backend: where the retraces
# that masking saves outweigh its dearer steps, on a 2-core CPU. TensorFlow, since a retrace
# reuses the backbone's traced forward pass (traced_forward.py, about 0.6x the retrace it was):
# masked fits took, against retraced ones, 0.55x and 0.56x the time at 4 steps a stage, 0.74x at
# 8 and 1.01x at 16 (EfficientNet-Lite0 48x48, benchmarks/transfer_matrix.py, default against
# default_retrace), and 1.00x at 4, 1.17x at 7 and 1.29x at 10 (MobileNetV2 96x96,
# benchmarks/masked_stages.py): 8 keeps the worst of these cells at 1.17x (16 let it reach
# 1.29x, 4 would give up the 0.74x). JAX: a recompile cost 3.2 s but a masked step 0.85 s more
# (XLA's CPU backward pass of the whole MobileNetV2: 1.2 s against 0.35 s), so masking pays
# below 4 steps.
MASK_MAX_STEPS = {"tensorflow": 8, "jax": 3}


class StageMasks:
    """The learning-rate table of a masked run: one row ``(absolute, scale, warmup_start)`` per
    group (the head, then each block), an optimizer variable so that the compiled step (on JAX
    too) reads it at every step.

    Args:
        staged: the :class:`~keras_tlft.callbacks.optim.StagedOptimizer`.
        n_blocks: the backbone's block count.
    """

    def __init__(self, staged, n_blocks: int):
        self.staged = staged
        self.table = staged.state_variable("tlft_stage_rates", (n_blocks + 1, 3), "float32",
                                           0.0)
        self.active = False  # whether the compiled step reads the table (set by the Stager)
        self.traced = False  # whether a step was traced for the union flags since activation
        self.warmup_steps = 0
        self.group_of: dict = {}  # optimizer var key -> row
        self._rules: dict = {}
        self.start, self.last = 0, -1  # the shared compiled step's first and last stages

    def activate(self, groups: list[list], warmup_steps: int, start: int = 0,
                 last: int = -1) -> None:
        """Read the table from now on, for ``groups`` (the head's variables, then each block's);
        stages ``start`` to ``last`` (this fit's last) share one compiled step, traced for
        ``last``'s flags (the stages before ``start`` retrace)."""
        inner = self.staged.inner
        self.group_of = {compat.var_key(inner, v): g for g, variables in enumerate(groups)
                         for v in variables}
        self.warmup_steps = int(warmup_steps)
        self._rules = {}
        self.start, self.last = start, last
        self.active, self.traced = True, False

    def deactivate(self) -> None:
        self.active, self.traced = False, False

    def enter(self, stager) -> bool:
        """Set the table for the stage ``stager`` has just entered, and the union's flags;
        whether the compiled step goes on as it is (``False``: retrace it)."""
        if not self.active:
            return False
        self.write(rows_for(stager))  # the head reads its rate from the table too
        if stager.index < self.start:
            return False  # a stage before the masked ones: its own step
        first, self.traced = not self.traced, True
        self.hold_union(stager)  # before the retrace: the step is traced for these flags
        return not first

    def hold_union(self, stager) -> None:
        """The flags of this fit's last stage (which trains every block an earlier stage does):
        what the compiled step was traced for, and what ``fit`` must see while it runs."""
        if self.active and self.traced:
            stager.apply(self.last % len(stager.stages))

    def show_exact(self, stager) -> None:
        """The flags of the stage in force, between epochs and after ``fit`` (for checkpoints,
        ``model.trainable_weights`` and ``model.summary()``)."""
        if self.active and self.traced and stager.index is not None:
            stager.apply(stager.index)

    def write(self, rows) -> None:
        """Set the rows: ``(absolute, scale, warmup_start)``, warmup_start < 0 for none."""
        self.table.assign(np.asarray(rows, dtype="float32"))

    def covers(self, variable) -> bool:
        return self.active and compat.var_key(self.staged.inner, variable) in self.group_of

    def rule(self, variable) -> MaskedRule:
        """The rule ``StagedOptimizer`` applies to a covered variable (one object per group, so
        that a step computes each group's rate once)."""
        group = self.group_of[compat.var_key(self.staged.inner, variable)]
        if group not in self._rules:
            self._rules[group] = MaskedRule(self, group)
        return self._rules[group]


class MaskedRule:
    """A group's learning rate read from the table in the compiled step, and its gradient
    zeroed while the group is frozen (so that Adam's moments stay at zero), as
    ``StagedOptimizer`` applies a :class:`~keras_tlft.schedules.lr_rules.LearningRateRule`."""

    is_identity = False

    def __init__(self, masks: StageMasks, group: int):
        self.masks, self.group = masks, group

    def tensor(self, learning_rate, iteration):
        from keras import ops

        row = self.masks.table[self.group]
        lr = row[0] + ops.cast(learning_rate, "float32") * row[1]
        if self.masks.warmup_steps:
            done = ops.cast(iteration, "float32") - row[2] + 1.0
            ramp = ops.clip(done / float(self.masks.warmup_steps), 0.0, 1.0)
            lr = ops.where(row[2] >= 0.0, lr * ramp, lr)
        return lr

    def mask_factor(self, dtype):
        """1 while the group trains (a rate above 0), else 0: its gradients are multiplied by
        it."""
        from keras import ops

        row = self.masks.table[self.group]
        return ops.cast(row[0] + row[1] > 0.0, dtype)

    def value(self, learning_rate: float, iteration: int) -> float:
        import keras

        absolute, scale, start = keras.ops.convert_to_numpy(self.masks.table)[self.group]
        lr = float(absolute + learning_rate * scale)
        if self.masks.warmup_steps and start >= 0:
            lr *= min(1.0, max(0.0, (iteration - start + 1) / self.masks.warmup_steps))
        return lr


def rows_for(stager) -> list[tuple[float, float, float]]:
    """The table's rows for the stage in force: the head's rule, then each block's (zeros for a
    frozen block)."""

    def row(rule):
        start = -1.0 if rule.warmup_start is None or not rule.warmup_steps else rule.warmup_start
        if rule.absolute is not None:
            return (float(rule.absolute), 0.0, float(start))
        return (0.0, float(rule.scale), float(start))

    frozen = (0.0, 0.0, -1.0)
    blocks = [row(stager.block_rules[b]) if b in stager.unfrozen_blocks and b in
              stager.block_rules else frozen for b in range(len(stager.backbone.blocks))]
    return [row(stager.head_rule), *blocks]


def last_stage(stager, params) -> int:
    """The last stage this fit reaches (of an epoch schedule; else the schedule's last)."""
    from keras_tlft.schedules.plan import stage_at_epoch

    epochs, stages = (params or {}).get("epochs"), stager.stages
    if stager.schedule.trigger != "epoch" or not epochs:
        return len(stages) - 1
    return stage_at_epoch(stages, epochs - 1)


def union_groups(stager, last: int) -> list[list]:
    """The head's trainable variables, then each block's, under stage ``last``'s flags."""
    bb, model = stager.backbone, stager.model
    with stager.flags_of(last):
        blocks: list[list] = [[] for _ in bb.blocks]
        for i, layer in enumerate(bb.layers):
            blocks[int(stager.block_of[i])].extend(layer.trainable_weights)
        inside = {id(v) for group in blocks for v in group}
        head = [v for v in model.trainable_weights if id(v) not in inside]
    return [head, *blocks]


def masking_plan(choice: str, stager, optimizer, params) -> tuple[int | None, str]:
    """``(start, why)``: the stage from which this fit changes stages by masking (``None``:
    it retraces at every change), and the reason in words (``params``: the callback's, for the
    fit's epochs and steps per epoch)."""
    import keras

    if choice == "retrace":
        return None, "stage_change='retrace'"
    blocker = _blocker(stager, optimizer, keras.backend.backend())
    if blocker:
        if choice == "mask":
            raise ValueError(
                f"stage_change='mask' cannot give the same training as a retrace here: "
                f"{blocker}. Expected stage_change='auto' or 'retrace' for this run. "
                "Received: stage_change='mask'")
        return None, blocker
    if choice == "mask":
        return 0, "stage_change='mask'"
    lengths = _stage_steps(stager, params)
    if lengths is None:
        return None, "the steps per epoch are not known"
    # From the first stage after which every stage but the last is short: the changes into the
    # stages before it, and into it, retrace (the one into stage 0 is the fit's first trace).
    # A frozen stage gains the most from its own step (no backward pass through the backbone:
    # MobileNetV2 on TensorFlow, 94 ms a step against 63 for a partial stage): two thirds.
    most = MASK_MAX_STEPS[keras.backend.backend()]
    limits = [most if trained else most * 2 // 3 for trained in stager.stage_trained]
    start = len(lengths)
    while start > 0 and lengths[start - 1] <= limits[start - 1]:
        start -= 1
    saved = len(lengths) - start
    if saved < 1:
        longest = max(lengths, default=0)
        return None, (f"too few short stages (stages of up to {longest} steps; masking pays "
                      f"up to {most} on {keras.backend.backend()})")
    return start, (f"{saved} retrace{'s' if saved != 1 else ''} saved: stages of at most "
                   f"{most} steps from stage {start + 1}")


def _blocker(stager, optimizer, backend: str) -> str | None:
    """Why masking would not train as a retrace does, or ``None``."""
    from keras_tlft.callbacks.optim import innermost_optimizer

    schedule, inner = stager.schedule, innermost_optimizer(optimizer)
    if backend == "torch":
        return "PyTorch runs eagerly: a stage change costs no retrace there"
    if schedule.bn == "train":
        return "bn='train' puts a block's BatchNorm layers in training mode when it unfreezes"
    if schedule.stage_lr_shape != "constant":
        return "slanted triangular rates are set per stage"
    if schedule.reset_optimizer_state:
        return "reset_optimizer_state rebuilds the optimizer's variables"
    if inner is not optimizer:
        return "a LossScaleOptimizer checks every gradient, the frozen blocks' too"
    if inner.global_clipnorm or getattr(inner, "gradient_accumulation_steps", None):
        return "global_clipnorm and gradient accumulation see the frozen blocks' gradients"
    trained = stager.stage_trained
    if any(not a <= b for a, b in zip(trained, trained[1:])):
        return "a stage freezes blocks again"
    bb = stager.backbone
    if any(getattr(v, "regularizer", None) is not None
           for layer in bb.layers for v in layer.weights if id(v) in trained[-1]):
        return "a weight regularizer of a frozen block would enter the loss"
    return None


def _stage_steps(stager, params) -> list[int] | None:
    """The length in steps of each stage of this fit but the last (``None``: unknown)."""
    stages, schedule = stager.stages, stager.schedule
    epochs, steps = (params or {}).get("epochs"), (params or {}).get("steps")
    if not epochs or not steps:
        return None
    if schedule.trigger == "epoch":
        begins = [min(s.epoch, epochs) for s in stages if s.epoch < epochs]
        return [(b - a) * steps for a, b in zip(begins, begins[1:])]
    # A plateau stage lasts at least patience + 1 epochs (or max_stage_epochs).
    shortest = schedule.patience + 1
    if schedule.max_stage_epochs:
        shortest = min(shortest, schedule.max_stage_epochs)
    return [shortest * steps] * max(0, min(len(stages), epochs) - 1)

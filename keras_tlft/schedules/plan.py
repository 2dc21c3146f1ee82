"""What a schedule's stages mean on a backbone: when each is in force, what it trains, at which
learning rates, and the whole plan stage by stage.

The :class:`~keras_tlft.ProgressiveUnfreeze` callback and ``keras-tlft inspect --schedule``
(:func:`plan_stages`, computed on the backbone's live layers) run these same functions. The
schedule itself is plain data (:mod:`keras_tlft.schedule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras_tlft.checks import check_number
from keras_tlft.model.blocks import (
    Block,
    apply_unfreeze,
    trainable_flags_restored,
    trainable_params,
)
from keras_tlft.schedules.lr_rules import LearningRateRule, SlantedTriangle
from keras_tlft.schedules.schedule import Schedule, Stage
from keras_tlft.schedules.schedule_input import parse_schedule

__all__ = [
    "describe_trigger",
    "learning_rate_rules",
    "plan_stages",
    "refrozen_blocks",
    "stage_lr_shape",
    "stage_at_epoch",
    "stage_error",
]


def plan_stages(
    backbone_layers: Sequence,
    blocks: Sequence[Block],
    schedule: Any,
    epochs: int | None = None,
    learning_rate: float | None = None,
    container=None,
) -> list[dict]:
    """The plan of ``schedule`` on a backbone, stage by stage, as JSON-able dicts.

    Computed by the code the callback runs: the unfreeze state is applied to the layers with
    :func:`keras_tlft.blocks.apply_unfreeze` (BatchNorm rule included) and counted, then every
    ``trainable`` flag is put back as it was.

    Args:
        backbone_layers: the backbone's layers (``backbone.layers``).
        blocks: its blocks (:func:`keras_tlft.blocks.cut_into_blocks` or ``derive_blocks``).
        schedule: anything :func:`parse_schedule` accepts.
        epochs: the number of epochs of the run; stages that would begin later are left out.
        learning_rate: the optimizer's learning rate, to print absolute learning rates; without
            it a block's learning rate is given as ``lr_scale`` (times the optimizer's).
        container: the nested backbone model, when there is one.

    Returns:
        One dict per stage: ``stage``, ``trigger``, ``start_epoch``, ``end_epoch`` (exclusive;
        ``None``: until the end, or unknown for a plateau schedule), ``unfreeze``, ``blocks`` (the
        names of the blocks with trainable layers), ``new_blocks`` (unfrozen in this stage),
        ``trainable_layers``, ``trainable_params`` (of the backbone), ``learning_rates`` (a list
        of ``{"name", "learning_rate", "lr_scale"}``, the head first, then the unfrozen blocks
        from the top; with a slanted triangular shape, each stage's peak rates),
        ``warmup_steps``, ``lr_shape`` (the rates' shape within a stage in words, or
        ``None`` for constant rates) and ``refrozen_blocks`` (the blocks the stage freezes
        again, with ``allow_refreeze=True``; without it such a stage is a ``ValueError``).
    """
    check_number("epochs", epochs, low=1, allow_low=True, allow_none=True, integer=True)
    check_number("learning_rate", learning_rate, allow_none=True)
    schedule = parse_schedule(schedule)
    stages = schedule.resolve(len(blocks))
    plan: list[dict] = []
    previous: set[int] = set()
    before = range(0)
    with trainable_flags_restored(backbone_layers, container):
        for i, stage in enumerate(stages):
            if epochs is not None and stage.epoch is not None and stage.epoch >= epochs:
                break
            try:
                unfrozen = apply_unfreeze(backbone_layers, blocks, stage.unfreeze,
                                          schedule.bn, container)
            except ValueError as exc:
                raise stage_error(schedule, i, stage, exc) from None
            trained = [j for j in unfrozen if backbone_layers[j].trainable]
            in_blocks = [b for b, block in enumerate(blocks)
                         if any(j in block.indices() for j in unfrozen)]
            plan.append(_plan_entry(schedule, stages, i, stage, blocks, in_blocks, previous,
                                    trained, trainable_params(backbone_layers, container),
                                    epochs, learning_rate))
            plan[-1]["refrozen_blocks"] = refrozen_blocks(schedule, i, stage, blocks, unfrozen,
                                                          before)
            previous, before = set(in_blocks), unfrozen
    return plan


def refrozen_blocks(schedule: Schedule, index: int, stage: Stage, blocks: Sequence[Block],
                    unfrozen: range, before: range) -> list[str]:
    """The names of the blocks with layers that stage ``index`` (unfreezing the layers
    ``unfrozen``) freezes again after the stage before unfroze them (``before``): ``[]`` for
    a schedule that only ever adds layers. A ``ValueError`` unless ``allow_refreeze``."""
    if index == 0 or len(unfrozen) >= len(before):  # both are tails of the layers
        return []
    names = [b.name for b in blocks if any(j in before and j not in unfrozen
                                           for j in b.indices())]
    if not schedule.allow_refreeze:
        where = f"epoch {stage.epoch}" if stage.epoch is not None else f"stage {index}"
        raise ValueError(
            f"Invalid schedule at {where} (unfreeze={stage.unfreeze.to_json()!r}): it freezes "
            f"again what the stage before trained ({len(before)} backbone layers, now "
            f"{len(unfrozen)}; blocks {', '.join(names)}). Expected each stage to unfreeze at "
            "least the layers of the one before (finetuning-scheduler refuses such schedules "
            "too: a block frozen again stops training, its optimizer state kept); pass "
            "allow_refreeze=True if this is on purpose. "
            f"Received: schedule={schedule.to_json()!r}"
        )
    return names


def _plan_entry(schedule, stages, i, stage, blocks, in_blocks, previous, trained, params,
                epochs, learning_rate) -> dict:
    nxt = stages[i + 1].epoch if i + 1 < len(stages) else None
    if nxt is not None and epochs is not None:
        nxt = min(nxt, epochs)
    head, rules = learning_rate_rules(schedule, stage, len(blocks))
    rates = [_rate("head", head, learning_rate)]
    rates += [_rate(blocks[b].name, rules[b], learning_rate) for b in reversed(in_blocks)]
    return {
        "stage": i,
        "trigger": describe_trigger(schedule, i, stage),
        "start_epoch": stage.epoch,
        "end_epoch": nxt if nxt is not None else epochs if schedule.trigger == "epoch" else None,
        "unfreeze": str(stage.unfreeze),
        "blocks": [blocks[b].name for b in in_blocks],
        "new_blocks": [blocks[b].name for b in in_blocks if b not in previous],
        "trainable_layers": len(trained),
        "trainable_params": params,
        "learning_rates": rates,
        "warmup_steps": schedule.warmup_steps,
        "lr_shape": describe_lr_shape(schedule),
    }


def _rate(name: str, rule: LearningRateRule, learning_rate: float | None) -> dict:
    if rule.absolute is not None:
        return {"name": name, "learning_rate": rule.absolute, "lr_scale": None}
    value = None if learning_rate is None else learning_rate * rule.scale
    return {"name": name, "learning_rate": value, "lr_scale": rule.scale}


def stage_at_epoch(stages: Sequence[Stage], epoch: int) -> int:
    """The index of the epoch-schedule stage in force at ``epoch``."""
    index = 0
    for i, stage in enumerate(stages):
        if stage.epoch is not None and stage.epoch <= epoch:
            index = i
    return index


def learning_rate_rules(schedule: Schedule, stage: Stage, n_blocks: int):
    """The head's :class:`LearningRateRule` and one per block (bottom block first) in ``stage``,
    before warm-up: the head trains at the stage's ``learning_rate`` or the optimizer's, the top
    block at ``backbone_lr`` or ``backbone_lr_ratio`` times the head's, each lower block at
    ``block_lr_decay`` times the one above it."""
    head = LearningRateRule(absolute=stage.learning_rate)
    rules = []
    for b in range(n_blocks):
        decay = schedule.block_lr_decay ** (n_blocks - 1 - b)
        if schedule.backbone_lr is not None:
            rules.append(LearningRateRule(absolute=schedule.backbone_lr * decay))
        elif stage.learning_rate is not None:
            rules.append(LearningRateRule(
                absolute=stage.learning_rate * schedule.backbone_lr_ratio * decay))
        else:
            rules.append(LearningRateRule(scale=schedule.backbone_lr_ratio * decay))
    return head, rules


def stage_lr_shape(schedule: Schedule, stages: Sequence[Stage], index: int, begun_epoch: int,
                   begun_iteration: int, fit_epochs: int, steps_per_epoch: int):
    """The :class:`SlantedTriangle` of stage ``index``, begun at ``begun_epoch`` and optimizer
    iteration ``begun_iteration`` of a ``fit`` of ``fit_epochs`` epochs of ``steps_per_epoch``
    steps, or ``None`` for a schedule of constant rates. The stage ends where the next one
    begins (an epoch schedule's) or, when that is not known in advance (its last stage, any
    plateau stage), at the end of the ``fit``."""
    if schedule.stage_lr_shape == "constant":
        return None
    end = fit_epochs
    if schedule.trigger == "epoch" and index + 1 < len(stages):
        end = min(end, stages[index + 1].epoch)
    steps = max(1, (end - begun_epoch) * steps_per_epoch)
    return SlantedTriangle(start=begun_iteration, steps=steps, cut_frac=schedule.cut_frac,
                           ratio=schedule.ratio)


def describe_lr_shape(schedule: Schedule) -> str | None:
    """The learning rates' shape within each stage, in words (``None``: constant)."""
    if schedule.stage_lr_shape == "constant":
        return None
    return (f"slanted triangular in each stage: from 1/{schedule.ratio:g} of the rates shown, up "
            f"to them over the first {schedule.cut_frac:.0%} of the stage's steps, then down to "
            f"1/{schedule.ratio:g} at its end")


def describe_trigger(schedule: Schedule, index: int, stage: Stage) -> str:
    if schedule.trigger == "epoch":
        return f"from epoch {stage.epoch}"
    if index == 0:
        return "start"
    on = " on the run's best" if schedule.best_scope == "run" else ""
    text = (f"{schedule.monitor} has not improved{on} for {schedule.patience} epoch"
            f"{'' if schedule.patience == 1 else 's'}")
    if schedule.max_stage_epochs is not None:
        n = schedule.max_stage_epochs
        text += f", or after {n} epoch{'' if n == 1 else 's'} of the stage before"
    return text


def stage_error(schedule: Schedule, index: int, stage: Stage, exc: Exception) -> ValueError:
    """``exc`` (from resolving a stage on a backbone) with the stage it came from."""
    where = f"epoch {stage.epoch}" if stage.epoch is not None else f"stage {index}"
    return ValueError(f"Invalid schedule at {where} (unfreeze={stage.unfreeze.to_json()!r}): {exc}")


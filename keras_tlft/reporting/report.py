"""inspect_backbone: what a backbone is made of and what an unfreeze state would train."""

from __future__ import annotations

from collections import Counter

from keras_tlft.backbones.registry import get_backbone
from keras_tlft.backbones.spec import BACKBONE_LAYER
from keras_tlft.model.assembly import build_model, load_backbone, parse_input_shape
from keras_tlft.model.batchnorm import bn_policy
from keras_tlft.model.blocks import apply_unfreeze, count_weights, cut_into_blocks, parse_unfreeze
from keras_tlft.model.heads import format_head_spec, resolve_head


def inspect_backbone(
    name,
    *,
    input_shape=None,
    include_top: bool = False,
    head: str | None = None,
    num_classes: int | None = None,
    unfreeze=None,
    bn: str = "frozen",
    train_bn: bool | None = None,
    include_layers: bool = False,
    schedule=None,
    epochs: int | None = None,
    learning_rate: float | None = None,
) -> dict:
    """Describe a backbone, built offline with ``weights=None``, as a JSON-able dict.

    Without ``head`` the backbone is inspected as Keras builds it (every layer trainable) unless
    ``unfreeze`` says otherwise; with ``head`` it is the model :func:`build_model` returns
    (backbone frozen) with ``unfreeze`` applied the way ``ProgressiveUnfreeze`` applies it,
    under the BatchNorm policy ``bn`` (``"frozen"``, ``"affine"`` or ``"train"``, see
    :mod:`keras_tlft.batchnorm`; ``train_bn=True`` is the old spelling of ``"train"``).

    With ``schedule`` (a preset, a JSON file or a mapping, as ``ProgressiveUnfreeze`` takes it)
    the report gains ``plan``: the schedule stage by stage, computed by the code the callback
    runs (:func:`keras_tlft.plan.plan_stages`), for ``epochs`` and the optimizer's
    ``learning_rate`` when given; each stage's ``model_trainable_params`` counts the whole
    model (head included). The report's totals are then those of stage 0 (where training
    starts), so ``unfreeze`` cannot be given too.
    """
    bn = bn_policy(bn, train_bn)
    spec = get_backbone(name)
    state = parse_unfreeze(unfreeze) if unfreeze is not None else None
    if head is not None and include_top:
        raise ValueError(
            "--include-top and --head exclude each other: the top is ImageNet's own head. "
            f"Received: include_top=True, head={head!r}"
        )
    head_layers = resolve_head(head, num_classes) if head is not None else None
    if schedule is not None:
        from keras_tlft.schedules.schedule_input import parse_schedule

        if state is not None:
            raise ValueError(
                "unfreeze and schedule exclude each other: the schedule's stage 0 sets what "
                f"trains first. Received: unfreeze={unfreeze!r}, schedule={schedule!r}"
            )
        schedule = parse_schedule(schedule)
    shape = parse_input_shape(input_shape if input_shape is not None else spec.default_input_shape)
    if head_layers is not None:
        model = build_model(spec, num_classes, head=format_head_spec(head_layers),
                            input_shape=shape, weights=None, bn=bn)
        backbone = model.get_layer(BACKBONE_LAYER)
    else:
        model = backbone = load_backbone(spec, shape, None, include_top)
    blocks = cut_into_blocks(backbone.layers, spec.blocks)
    if schedule is not None:  # the totals are those of stage 0, where training starts
        state, bn = schedule.resolve(len(blocks))[0].unfreeze, schedule.bn
    if state is not None:
        apply_unfreeze(backbone.layers, blocks, state, bn, container=backbone)

    total = model.count_params()
    trainable = count_weights(model.trainable_weights)
    report = {
        "backbone": spec.name,
        "source": spec.source,
        "family": spec.family,
        "input_shape": list(shape),
        "include_top": include_top,
        "weights": list(spec.weights),
        "offline_weights": list(spec.offline_weights),
        "head": format_head_spec(head_layers) if head_layers is not None else None,
        "unfreeze": str(state) if state is not None else None,
        "bn": bn,
        "train_bn": bn == "train",  # the old key
        "layers": len(backbone.layers),
        "layer_types": dict(Counter(type(layer).__name__ for layer in backbone.layers)),
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "backbone_params": backbone.count_params(),
        "blocks": [_block_row(backbone.layers, b) for b in blocks],
    }
    if schedule is not None:
        from keras_tlft.schedules.plan import plan_stages

        report["schedule"] = schedule.to_json()
        report["plan"] = plan_stages(backbone.layers, blocks, schedule, epochs=epochs,
                                     learning_rate=learning_rate, container=backbone)
        head_trainable = trainable - count_weights(backbone.trainable_weights)
        for stage in report["plan"]:  # the whole model's, as the totals count
            stage["model_trainable_params"] = stage["trainable_params"] + head_trainable
    if include_layers:
        block_of = {i: b.name for b in blocks for i in b.indices()}
        report["layer_table"] = [
            {
                "index": i,
                "name": layer.name,
                "type": type(layer).__name__,
                "params": layer.count_params() if layer.weights else 0,
                "trainable_params": count_weights(layer.trainable_weights),
                "block": block_of[i],
            }
            for i, layer in enumerate(backbone.layers)
        ]
    return report


def _block_row(layers, block) -> dict:
    members = layers[block.first : block.last + 1]
    trainable = sum(count_weights(layer.trainable_weights) for layer in members)
    return {
        "name": block.name,
        "first_layer": block.first,
        "last_layer": block.last,
        "first_layer_name": members[0].name,
        "last_layer_name": members[-1].name,
        "params": sum(count_weights(layer.weights) for layer in members),
        "trainable_params": trainable,
        "trainable": trainable > 0,
    }

import numpy as np
import pytest

from keras_tlft.report import inspect_backbone


def keras_counts(model):
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return model.count_params(), trainable


def test_vgg16_has_19_layers_and_14714688_parameters():
    r = inspect_backbone("vgg16")
    assert r["layers"] == 19
    assert r["layer_types"] == {"InputLayer": 1, "Conv2D": 13, "MaxPooling2D": 5}
    assert r["total_params"] == 14_714_688
    assert r["trainable_params"] == 14_714_688 and r["non_trainable_params"] == 0
    assert [b["name"] for b in r["blocks"]] == [f"block{i}" for i in range(1, 6)]
    assert sum(b["params"] for b in r["blocks"]) == r["total_params"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vgg16", {"unfreeze": 2}),
        ("vgg16", {"head": "vgg", "num_classes": 10, "input_shape": (64, 64, 3)}),
        ("mobilenet_v2", {"head": "gap,dropout:0.2,dense:10:softmax", "unfreeze": "from:100",
                          "input_shape": (96, 96, 3)}),
        ("mobilenet_v2", {"head": "mlp_bn", "num_classes": 4, "unfreeze": 3, "train_bn": True,
                          "input_shape": (96, 96, 3)}),
        ("resnet50", {"head": "gap", "num_classes": 2, "unfreeze": "all",
                      "input_shape": (64, 64, 3)}),
        ("resnet50", {"include_top": True, "unfreeze": 1}),
    ],
)
def test_totals_equal_keras_own_counts(name, kwargs):
    r = inspect_backbone(name, **kwargs)
    # Rebuild the same thing independently through Keras and compare.
    from keras_tlft import build_model, get_backbone
    from keras_tlft.blocks import apply_unfreeze, cut_into_blocks

    spec = get_backbone(name)
    shape = kwargs.get("input_shape", spec.default_input_shape)
    if "head" in kwargs:
        model = build_model(spec, kwargs.get("num_classes"), head=kwargs["head"],
                            input_shape=shape, weights=None)
        backbone = model.get_layer("backbone")
    else:
        model = backbone = spec.build(shape, weights=None, include_top=kwargs.get("include_top"))
    apply_unfreeze(backbone.layers, cut_into_blocks(backbone.layers, spec.blocks),
                   kwargs.get("unfreeze", "none"),
                   train_bn=kwargs.get("train_bn", False), container=backbone)
    total, trainable = keras_counts(model)
    assert (r["total_params"], r["trainable_params"]) == (total, trainable)
    assert r["non_trainable_params"] == total - trainable
    head_trainable = keras_counts(model.get_layer("head"))[1] if "head" in kwargs else 0
    assert sum(b["trainable_params"] for b in r["blocks"]) == trainable - head_trainable


def test_unfreeze_top_two_blocks_of_vgg16_trains_exactly_blocks_4_and_5():
    r = inspect_backbone("vgg16", unfreeze=2)
    trainable = [b["name"] for b in r["blocks"] if b["trainable"]]
    assert trainable == ["block4", "block5"]
    assert r["trainable_params"] == r["blocks"][3]["params"] + r["blocks"][4]["params"]


def test_batchnorm_in_unfrozen_blocks_stays_frozen_by_default():
    r = inspect_backbone("resnet50", unfreeze=1, input_shape=(64, 64, 3), include_layers=True)
    conv5 = [row for row in r["layer_table"] if row["block"] == "conv5"]
    assert all(row["trainable_params"] == 0 for row in conv5 if row["type"] == "BatchNormalization")
    assert all(row["trainable_params"] == row["params"] for row in conv5 if row["type"] == "Conv2D")


def test_layer_table_lists_every_layer_with_its_block():
    r = inspect_backbone("vgg16", include_layers=True)
    assert [row["index"] for row in r["layer_table"]] == list(range(19))
    assert r["layer_table"][-1] == {"index": 18, "name": "block5_pool", "type": "MaxPooling2D",
                                    "params": 0, "trainable_params": 0, "block": "block5"}


def test_head_and_include_top_exclude_each_other():
    with pytest.raises(ValueError, match="--include-top and --head exclude each other"):
        inspect_backbone("vgg16", include_top=True, head="gap", num_classes=2)

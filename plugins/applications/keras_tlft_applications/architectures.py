"""The keras.applications architectures: static metadata, one row each.

``blocks`` lists ``(name, pattern)`` or ``(name, pattern, after)`` rules, read as
:class:`keras_tlft.registry.BlockRule`: a block begins at the first layer whose name matches
``pattern`` (or, with ``after=True``, just after it) and runs until the next block begins. The
first block always starts at layer 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    name: str
    constructor: str
    family: str
    description: str
    params: int
    preprocessing: str
    blocks: tuple
    default_input_shape: tuple = (224, 224, 3)
    min_input_size: int = 32
    aliases: tuple = ()


def _numbered(prefix_fmt: str, numbers, name_fmt: str | None = None) -> tuple:
    name_fmt = name_fmt or prefix_fmt
    return tuple((name_fmt.format(i), "^" + prefix_fmt.format(i) + "_") for i in numbers)


VGG_BLOCKS = _numbered("block{}", range(1, 6))
RESNET_BLOCKS = (("conv1", "^conv1_"),) + _numbered("conv{}", range(2, 6))
MOBILENET_V2_BLOCKS = (
    ("stem", "^Conv1$"),
    ("block_0", "^expanded_conv_"),
    *_numbered("block_{}", range(1, 17)),
    ("top", "^Conv_1$"),
)

ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("vgg16", "VGG16", "vgg", "VGG16, 13 conv layers in 5 blocks (2014)",
                 14_714_688, "caffe", VGG_BLOCKS),
    Architecture("vgg19", "VGG19", "vgg", "VGG19, 16 conv layers in 5 blocks (2014)",
                 20_024_384, "caffe", VGG_BLOCKS),
    Architecture("resnet50", "ResNet50", "resnet", "ResNet50 v1, bottleneck residual stages (2015)",
                 23_587_712, "caffe", RESNET_BLOCKS),
    Architecture("mobilenet_v2", "MobileNetV2", "mobilenet_v2",
                 "MobileNetV2, 17 inverted-residual blocks (2018)",
                 2_257_984, "tf", MOBILENET_V2_BLOCKS),
)

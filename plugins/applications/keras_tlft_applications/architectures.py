"""The keras.applications architectures: static metadata, one row each.

``blocks`` lists ``(name, pattern)`` or ``(name, pattern, after)`` rules, read as
:class:`keras_tlft.registry.BlockRule`: a block begins at the first layer whose name matches
``pattern`` (or, with ``after=True``, just after it) and runs until the next block begins. The
first block always starts at layer 0, so the first rule's pattern is documentation only.

Rules match the names Keras gives layers explicitly (``block3_conv1``, ``mixed4``). Layers Keras
names automatically (``conv2d_17``, ``max_pooling2d_1``) carry a per-session counter, so a rule
may match such a name only by its stem, never by its number.

``params`` are ``count_params()`` of ``keras.applications.<constructor>(include_top=False,
weights=None, input_shape=default_input_shape)`` in Keras 3.15, written in as literals; the test
suite checks every one against a freshly built model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """One keras.applications constructor and what keras-tlft needs to know about it."""

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


def _square(size: int) -> tuple:
    return (size, size, 3)


# An automatically named max-pooling layer, whatever its counter.
_MAX_POOL = r"^max_pooling2d(_\d+)?$"

VGG_BLOCKS = _numbered("block{}", range(1, 6))

# ResNet v1 and v2: the stem, then one block per stage. ResNet v2's final ``post_bn`` and
# ``post_relu`` join conv5.
RESNET_BLOCKS = (("conv1", "^conv1_"),) + _numbered("conv{}", range(2, 6))

# DenseNet: the stem, then one block per dense block; each transition layer (``pool2_*`` ...)
# ends the dense block before it, and the final ``bn``/``relu`` join conv5.
DENSENET_BLOCKS = RESNET_BLOCKS

# MobileNet v1: the stem, then its 13 depthwise-separable blocks (``conv_dw_k``/``conv_pw_k``,
# preceded by ``conv_pad_k`` where the block downsamples).
MOBILENET_BLOCKS = (("stem", "^conv1$"),) + tuple(
    (f"block_{i}", rf"^conv_(pad|dw)_{i}(_|$)") for i in range(1, 14)
)

MOBILENET_V2_BLOCKS = (
    ("stem", "^Conv1$"),
    ("block_0", "^expanded_conv_"),
    *_numbered("block_{}", range(1, 17)),
    ("top", "^Conv_1$"),
)


def _mobilenet_v3_blocks(n_blocks: int) -> tuple:
    """Stem, the ``expanded_conv`` blocks (the first one is unnumbered), top."""
    return (
        ("stem", "^conv$"),
        ("block_0", "^expanded_conv_[a-z]"),
        *((f"block_{i}", f"^expanded_conv_{i}_") for i in range(1, n_blocks)),
        ("top", "^conv_1$"),
    )


def _efficientnet_blocks(n_stages: int) -> tuple:
    """Stem, one block per stage (``block3a_``, ``block3b_``... form stage 3), top."""
    return (
        ("stem", "^stem_"),
        *((f"block{i}", rf"^block{i}[a-z]_") for i in range(1, n_stages + 1)),
        ("top", "^top_"),
    )


# ConvNeXt: the stem, then its 4 stages; each downsampling layer starts the stage after it and
# the final layer normalization joins the last stage.
CONVNEXT_BLOCKS = (
    ("stem", "^convnext_[a-z]+_stem$"),
    ("stage_0", "^convnext_[a-z]+_stage_0_"),
    *((f"stage_{i}", rf"^convnext_[a-z]+_downsampling_block_{i - 1}$") for i in range(1, 4)),
)

# InceptionV3's inner layers have automatic names, so blocks end at the named concatenations
# ``mixed0`` ... ``mixed10``. The stem's two halves each end at an (automatically named) max
# pooling: the first max pooling ends stem_1 and the second one ends stem_2.
INCEPTION_V3_BLOCKS = (
    ("stem_1", "^conv2d"),
    ("stem_2", _MAX_POOL, True),
    ("mixed0", _MAX_POOL, True),
    *((f"mixed{i}", f"^mixed{i - 1}$", True) for i in range(1, 11)),
)

# InceptionResNetV2: the two stem halves as in InceptionV3, then the Inception-A module
# (``mixed_5b``), 10 Inception-ResNet-A blocks (``block35_*``), reduction A (``mixed_6a``),
# 20 Inception-ResNet-B blocks (``block17_*``), reduction B (``mixed_7a``), 10
# Inception-ResNet-C blocks (``block8_*``) and the final 1x1 convolution (``conv_7b``).
INCEPTION_RESNET_V2_BLOCKS = (
    ("stem_1", "^conv2d"),
    ("stem_2", _MAX_POOL, True),
    ("mixed_5b", _MAX_POOL, True),
    ("block35", "^mixed_5b$", True),
    ("mixed_6a", "^block35_10_ac$", True),
    ("block17", "^mixed_6a$", True),
    ("mixed_7a", "^block17_20_ac$", True),
    ("block8", "^mixed_7a$", True),
    ("conv_7b", "^conv_7b$"),
)

XCEPTION_BLOCKS = _numbered("block{}", range(1, 15))


def _nasnet_blocks(n: int) -> tuple:
    """NASNet with ``n`` normal cells per stage: the stem (its stem convolution and two stem
    reduction cells), then the three stages of normal cells and the two reduction cells between
    them. Each group begins just after the previous cell's concatenation."""
    return (
        ("stem", "^stem_conv1$"),
        ("normal_1", "^reduction_concat_stem_2$", True),
        ("reduction_1", f"^normal_concat_{n - 1}$", True),
        ("normal_2", f"^reduction_concat_reduce_{n}$", True),
        ("reduction_2", f"^normal_concat_{2 * n}$", True),
        ("normal_3", f"^reduction_concat_reduce_{2 * n}$", True),
    )


def _efficientnet(b: int, params: int, size: int) -> Architecture:
    return Architecture(
        f"efficientnet_b{b}", f"EfficientNetB{b}", "efficientnet",
        f"EfficientNetB{b}, compound-scaled MBConv stages at {size}px (2019)",
        params, "none", _efficientnet_blocks(7), _square(size),
    )


def _efficientnet_v2(v: str, params: int, size: int, n_stages: int) -> Architecture:
    return Architecture(
        f"efficientnet_v2_{v.lower()}", f"EfficientNetV2{v}", "efficientnet_v2",
        f"EfficientNetV2-{v}, Fused-MBConv and MBConv stages at {size}px (2021)",
        params, "none", _efficientnet_blocks(n_stages), _square(size),
    )


def _convnext(size: str, params: int) -> Architecture:
    return Architecture(
        f"convnext_{size.lower()}", f"ConvNeXt{size}", "convnext",
        f"ConvNeXt-{size}, a modernized ResNet in 4 stages (2022)",
        params, "none", CONVNEXT_BLOCKS,
    )


ARCHITECTURES: tuple[Architecture, ...] = (
    # VGG
    Architecture("vgg16", "VGG16", "vgg", "VGG16, 13 conv layers in 5 blocks (2014)",
                 14_714_688, "caffe", VGG_BLOCKS),
    Architecture("vgg19", "VGG19", "vgg", "VGG19, 16 conv layers in 5 blocks (2014)",
                 20_024_384, "caffe", VGG_BLOCKS),
    # ResNet v1
    Architecture("resnet50", "ResNet50", "resnet", "ResNet50 v1, bottleneck residual stages (2015)",
                 23_587_712, "caffe", RESNET_BLOCKS),
    Architecture("resnet101", "ResNet101", "resnet",
                 "ResNet101 v1, bottleneck residual stages (2015)",
                 42_658_176, "caffe", RESNET_BLOCKS),
    Architecture("resnet152", "ResNet152", "resnet",
                 "ResNet152 v1, bottleneck residual stages (2015)",
                 58_370_944, "caffe", RESNET_BLOCKS),
    # ResNet v2
    Architecture("resnet50_v2", "ResNet50V2", "resnet_v2",
                 "ResNet50 v2, pre-activation residual stages (2016)",
                 23_564_800, "tf", RESNET_BLOCKS),
    Architecture("resnet101_v2", "ResNet101V2", "resnet_v2",
                 "ResNet101 v2, pre-activation residual stages (2016)",
                 42_626_560, "tf", RESNET_BLOCKS),
    Architecture("resnet152_v2", "ResNet152V2", "resnet_v2",
                 "ResNet152 v2, pre-activation residual stages (2016)",
                 58_331_648, "tf", RESNET_BLOCKS),
    # Inception
    Architecture("inception_v3", "InceptionV3", "inception_v3",
                 "InceptionV3, factorized Inception modules mixed0-mixed10 (2015)",
                 21_802_784, "tf", INCEPTION_V3_BLOCKS, _square(299), 75),
    Architecture("inception_resnet_v2", "InceptionResNetV2", "inception_resnet_v2",
                 "InceptionResNetV2, Inception modules with residual connections (2016)",
                 54_336_736, "tf", INCEPTION_RESNET_V2_BLOCKS, _square(299), 75),
    Architecture("xception", "Xception", "xception",
                 "Xception, depthwise-separable convolutions in 14 blocks (2016)",
                 20_861_480, "tf", XCEPTION_BLOCKS, _square(299), 71),
    # DenseNet
    Architecture("densenet121", "DenseNet121", "densenet",
                 "DenseNet121, 4 densely connected blocks (2016)",
                 7_037_504, "torch", DENSENET_BLOCKS),
    Architecture("densenet169", "DenseNet169", "densenet",
                 "DenseNet169, 4 densely connected blocks (2016)",
                 12_642_880, "torch", DENSENET_BLOCKS),
    Architecture("densenet201", "DenseNet201", "densenet",
                 "DenseNet201, 4 densely connected blocks (2016)",
                 18_321_984, "torch", DENSENET_BLOCKS),
    # NASNet
    Architecture("nasnet_mobile", "NASNetMobile", "nasnet",
                 "NASNet-A Mobile, searched normal and reduction cells (2017)",
                 4_269_716, "tf", _nasnet_blocks(4)),
    Architecture("nasnet_large", "NASNetLarge", "nasnet",
                 "NASNet-A Large, searched normal and reduction cells (2017)",
                 84_916_818, "tf", _nasnet_blocks(6), _square(331)),
    # MobileNet
    Architecture("mobilenet_v1", "MobileNet", "mobilenet",
                 "MobileNet v1, 13 depthwise-separable blocks (2017)",
                 3_228_864, "tf", MOBILENET_BLOCKS),
    Architecture("mobilenet_v2", "MobileNetV2", "mobilenet_v2",
                 "MobileNetV2, 17 inverted-residual blocks (2018)",
                 2_257_984, "tf", MOBILENET_V2_BLOCKS),
    Architecture("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3",
                 "MobileNetV3-Small, 11 inverted-residual blocks with squeeze-excite (2019)",
                 939_120, "none", _mobilenet_v3_blocks(11)),
    Architecture("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3",
                 "MobileNetV3-Large, 15 inverted-residual blocks with squeeze-excite (2019)",
                 2_996_352, "none", _mobilenet_v3_blocks(15)),
    # EfficientNet
    _efficientnet(0, 4_049_571, 224),
    _efficientnet(1, 6_575_239, 240),
    _efficientnet(2, 7_768_569, 260),
    _efficientnet(3, 10_783_535, 300),
    _efficientnet(4, 17_673_823, 380),
    _efficientnet(5, 28_513_527, 456),
    _efficientnet(6, 40_960_143, 528),
    _efficientnet(7, 64_097_687, 600),
    # EfficientNetV2
    _efficientnet_v2("B0", 5_919_312, 224, 6),
    _efficientnet_v2("B1", 6_931_124, 240, 6),
    _efficientnet_v2("B2", 8_769_374, 260, 6),
    _efficientnet_v2("B3", 12_930_622, 300, 6),
    _efficientnet_v2("S", 20_331_360, 384, 6),
    _efficientnet_v2("M", 53_150_388, 480, 7),
    _efficientnet_v2("L", 117_746_848, 480, 7),
    # ConvNeXt
    _convnext("Tiny", 27_820_128),
    _convnext("Small", 49_454_688),
    _convnext("Base", 87_566_464),
    _convnext("Large", 196_230_336),
    _convnext("XLarge", 348_147_968),
)

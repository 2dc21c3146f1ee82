"""The keras-cv image backbones: static metadata and architecture arguments, one row each.

keras-cv 0.9 keeps its architecture configurations on Kaggle, so even its weightless alias
constructors (``keras_cv.models.ResNet50V2Backbone()``) fail offline. Each row therefore carries
the explicit constructor arguments (``config``), as keras-cv 0.7 still shipped them in its preset
modules; the builder passes them to the family class (``keras_cv.models.ResNetV2Backbone``).

``params`` is ``count_params()`` of the backbone built from ``config`` at
``default_input_shape`` with keras-cv 0.9.0 and Keras 3.15, written in as a literal so that
``keras-tlft list`` needs no TensorFlow; the test suite checks every one against a fresh build.

``preset`` names the weightless keras-cv preset whose metadata ``params`` figure describes the
same architecture, and ``published_as`` says how that figure relates to ours:

- ``"backbone"``: it is the backbone's ``count_params()``, and must equal ``params``;
- ``"classifier_10"``: it counts the backbone plus a 10-class ``Dense`` head (keras-cv's MiT
  figures, shared with keras-hub), so it equals ``params + 10 * channels + 10``;
- ``"identity_expansion"``: it counts, in every block whose expansion ratio is 1 (the first
  stage of EfficientNetV1 and EfficientNetLite), a 1x1 expansion ``Conv2D`` (``c * c`` weights)
  and its ``BatchNormalization`` (``4 * c``) that keras-cv's current code skips for such blocks,
  so it equals ``params + sum(c * c + 4 * c)`` over those blocks' input channels ``c``;
- ``"unrounded_se"``: it counts MobileNetV3's squeeze-and-excite bottlenecks as
  ``filters * ratio`` wide, where keras-cv's current code rounds them up to a multiple of 8, so
  it equals ``params - sum((2 * filters + 1) * (built - filters * ratio))`` over the SE layers.
  These two describe keras-cv's earlier code, not the architecture keras-cv 0.9 builds from its
  own arguments; the tests rebuild each entry and derive the published figure from its layers;
- ``None``: keras-cv publishes no figure (DenseNet, VGG16).

``weights`` maps a keras-tlft weights name to the keras-cv preset that carries those weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    """One keras-cv backbone configuration and what keras-tlft needs to know about it."""

    name: str
    constructor: str
    family: str
    description: str
    params: int
    config: dict
    blocks: tuple
    preset: str | None = None
    published_as: str | None = "backbone"
    weights: dict = field(default_factory=dict)
    default_input_shape: tuple = (224, 224, 3)
    min_input_size: int = 32


def _stages(prefix_fmt: str, names_fmt: str, numbers) -> tuple:
    return tuple((names_fmt.format(i), "^" + prefix_fmt.format(i)) for i in numbers)


# ResNet v1 and v2 (keras-cv names every stack ``v2_stack_k``, v1 included); v2's final
# ``post_bn``/``post_relu`` join the last stack.
RESNET_BLOCKS = (("stem", "^conv1_"),) + _stages("v2_stack_{}_", "stack_{}", range(4))

# DenseNet: the stem, then one block per dense block; each transition (``pool2_*``...) ends the
# dense block before it and the final ``bn``/``relu`` join conv5.
DENSENET_BLOCKS = (("conv1", "^conv1_"),) + _stages("conv{}_", "conv{}", range(2, 6))

CSP_DARKNET_BLOCKS = (("stem", "^stem_"),) + _stages("dark{}_", "dark{}", range(2, 6))

YOLO_V8_BLOCKS = (("stem", "^stem_"),) + _stages("stack{}_", "stack{}", range(1, 5))

VGG16_BLOCKS = _stages("block{}_", "block{}", range(1, 6))

# MiT: one block per stage; each stage begins with its overlapping patch embedding.
MIT_BLOCKS = _stages("patch_and_embed_{}$", "stage_{}", range(4))


def _efficientnet_blocks(n_stages: int) -> tuple:
    """Stem, one block per stage (``block3a_``, ``block3b_``... form stage 3), top."""
    return (
        ("stem", "^stem_"),
        *((f"block{i}", rf"^block{i}[a-z]_") for i in range(1, n_stages + 1)),
        ("top", "^top_"),
    )


def _mobilenet_v3_blocks(n_blocks: int) -> tuple:
    """Stem, the inverted residual blocks (the first is named ``expanded_conv_`` without a
    number), top. Activations between them carry automatic names and join the block before."""
    return (
        ("stem", "^Conv$"),
        ("block_0", r"^expanded_conv_(?!\d)"),
        *((f"block_{i}", f"^expanded_conv_{i}_") for i in range(1, n_blocks)),
        ("top", "^Conv_1$"),
    )


def _vitdet_blocks(depth: int) -> tuple:
    """Patch embedding, one block per transformer encoder, the neck.

    The encoders and the neck carry automatic, per-session numbered names
    (``windowed_transformer_encoder_7``), so each rule matches the stem only: the rules are read
    in order, each from the layer after the previous block's start.
    """
    return (
        ("embedding", "^images$"),
        *((f"encoder_{i}", "^windowed_transformer_encoder") for i in range(depth)),
        ("neck", "^sequential"),
    )


_RESNET = {"stackwise_filters": [64, 128, 256, 512], "stackwise_strides": [1, 2, 2, 2]}

_EFFNET_V1_STAGES = {
    "stackwise_kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
    "stackwise_num_repeats": [1, 2, 2, 3, 3, 4, 1],
    "stackwise_input_filters": [32, 16, 24, 40, 80, 112, 192],
    "stackwise_output_filters": [16, 24, 40, 80, 112, 192, 320],
    "stackwise_expansion_ratios": [1, 6, 6, 6, 6, 6, 6],
    "stackwise_strides": [1, 2, 2, 2, 1, 2, 1],
}


def _effnet_v1(width, depth, dropout) -> dict:
    return {
        "width_coefficient": width,
        "depth_coefficient": depth,
        "dropout_rate": dropout,
        "drop_connect_rate": 0.2,
        "depth_divisor": 8,
        **_EFFNET_V1_STAGES,
        "stackwise_squeeze_and_excite_ratios": [0.25] * 7,
        "activation": "swish",
    }


def _effnet_lite(width, depth, dropout) -> dict:
    return {
        "width_coefficient": width,
        "depth_coefficient": depth,
        "dropout_rate": dropout,
        "drop_connect_rate": 0.2,
        "depth_divisor": 8,
        **_EFFNET_V1_STAGES,
        "activation": "relu6",
    }


_EFFNET_V2_B = {
    "stackwise_kernel_sizes": [3, 3, 3, 3, 3, 3],
    "stackwise_num_repeats": [1, 2, 2, 3, 5, 8],
    "stackwise_input_filters": [32, 16, 32, 48, 96, 112],
    "stackwise_output_filters": [16, 32, 48, 96, 112, 192],
    "stackwise_expansion_ratios": [1, 4, 4, 4, 6, 6],
    "stackwise_squeeze_and_excite_ratios": [0, 0, 0, 0.25, 0.25, 0.25],
    "stackwise_strides": [1, 2, 2, 2, 1, 2],
    "stackwise_conv_types": ["fused"] * 3 + ["unfused"] * 3,
}


def _effnet_v2(width, depth, stages=None) -> dict:
    return {
        "width_coefficient": width,
        "depth_coefficient": depth,
        "skip_connection_dropout": 0.2,
        "depth_divisor": 8,
        "min_depth": 8,
        "activation": "swish",
        **(stages or _EFFNET_V2_B),
    }


_EFFNET_V2_S = {
    **_EFFNET_V2_B,
    "stackwise_num_repeats": [2, 4, 4, 6, 9, 15],
    "stackwise_input_filters": [24, 24, 48, 64, 128, 160],
    "stackwise_output_filters": [24, 48, 64, 128, 160, 256],
    "stackwise_expansion_ratios": [1, 4, 4, 4, 6, 6],
}
_EFFNET_V2_ML = {
    "stackwise_kernel_sizes": [3] * 7,
    "stackwise_expansion_ratios": [1, 4, 4, 4, 6, 6, 6],
    "stackwise_squeeze_and_excite_ratios": [0, 0, 0, 0.25, 0.25, 0.25, 0.25],
    "stackwise_strides": [1, 2, 2, 2, 1, 2, 1],
    "stackwise_conv_types": ["fused"] * 3 + ["unfused"] * 4,
}
_EFFNET_V2_M = {
    **_EFFNET_V2_ML,
    "stackwise_num_repeats": [3, 5, 5, 7, 14, 18, 5],
    "stackwise_input_filters": [24, 24, 48, 80, 160, 176, 304],
    "stackwise_output_filters": [24, 48, 80, 160, 176, 304, 512],
}
_EFFNET_V2_L = {
    **_EFFNET_V2_ML,
    "stackwise_num_repeats": [4, 7, 7, 10, 19, 25, 7],
    "stackwise_input_filters": [32, 32, 64, 96, 192, 224, 384],
    "stackwise_output_filters": [32, 64, 96, 192, 224, 384, 640],
}

_MOBILENET_V3_SMALL = {
    "stackwise_expansion": [1, 4.5, 3.6666666666666665, 4, 6, 6, 3, 3, 6, 6, 6],
    "stackwise_filters": [16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96],
    "stackwise_kernel_size": [3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5],
    "stackwise_stride": [2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1],
    "stackwise_se_ratio": [0.25, None, None] + [0.25] * 8,
    "stackwise_activation": ["relu"] * 3 + ["hard_swish"] * 8,
    "alpha": 1.0,
}
_MOBILENET_V3_LARGE = {
    "stackwise_expansion": [1, 4, 3, 3, 3, 3, 6, 2.5, 2.3, 2.3, 6, 6, 6, 6, 6],
    "stackwise_filters": [16, 24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160],
    "stackwise_kernel_size": [3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5],
    "stackwise_stride": [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1],
    "stackwise_se_ratio": [None] * 3 + [0.25] * 3 + [None] * 4 + [0.25] * 5,
    "stackwise_activation": ["relu"] * 6 + ["hard_swish"] * 9,
    "alpha": 1.0,
}


def _vitdet(dim, depth, mlp, heads, global_idx) -> dict:
    return {
        "patch_size": 16,
        "embed_dim": dim,
        "depth": depth,
        "mlp_dim": mlp,
        "num_heads": heads,
        "out_chans": 256,
        "use_bias": True,
        "use_abs_pos": True,
        "use_rel_pos": True,
        "window_size": 14,
        "global_attention_indices": global_idx,
        "layer_norm_epsilon": 1e-6,
    }


def _resnet(name, cls, preset, n, blocks, block_type, params, weights=None) -> Architecture:
    v2 = cls == "ResNetV2Backbone"
    config = {**_RESNET, "stackwise_blocks": blocks, "block_type": block_type}
    return Architecture(
        name=name,
        constructor=cls,
        family="resnet_v2" if v2 else "resnet",
        description=f"ResNet{'V2' if v2 else ''}-{n} "
        f"(keras_cv.models.ResNet{n}{'V2' if v2 else ''}Backbone)",
        params=params,
        config=config,
        blocks=RESNET_BLOCKS,
        preset=preset,
        weights=weights or {},
    )


_B18, _B34, _B50 = [2, 2, 2, 2], [3, 4, 6, 3], [3, 4, 6, 3]
_B101, _B152 = [3, 4, 23, 3], [3, 8, 36, 3]

ARCHITECTURES: tuple[Architecture, ...] = (
    # --- ResNet v1 / v2 ---
    _resnet("resnet18_backbone", "ResNetBackbone", "resnet18", 18, _B18, "basic_block",
            11_186_112),
    _resnet("resnet34_backbone", "ResNetBackbone", "resnet34", 34, _B34, "basic_block",
            21_301_696),
    _resnet("resnet50_backbone", "ResNetBackbone", "resnet50", 50, _B50, "block", 23_561_152,
            {"imagenet": "resnet50_imagenet"}),
    _resnet("resnet101_backbone", "ResNetBackbone", "resnet101", 101, _B101, "block",
            42_605_504),
    _resnet("resnet152_backbone", "ResNetBackbone", "resnet152", 152, _B152, "block",
            58_295_232),
    _resnet("resnet18_v2_backbone", "ResNetV2Backbone", "resnet18_v2", 18, _B18, "basic_block",
            11_183_488),
    _resnet("resnet34_v2_backbone", "ResNetV2Backbone", "resnet34_v2", 34, _B34, "basic_block",
            21_299_072),
    _resnet("resnet50_v2_backbone", "ResNetV2Backbone", "resnet50_v2", 50, _B50, "block",
            23_564_800, {"imagenet": "resnet50_v2_imagenet"}),
    _resnet("resnet101_v2_backbone", "ResNetV2Backbone", "resnet101_v2", 101, _B101, "block",
            42_626_560),
    _resnet("resnet152_v2_backbone", "ResNetV2Backbone", "resnet152_v2", 152, _B152, "block",
            58_331_648),
    # --- MobileNetV3 ---
    Architecture(
        "mobilenet_v3_small_backbone", "MobileNetV3Backbone", "mobilenet_v3",
        "MobileNetV3 Small (keras_cv.models.MobileNetV3SmallBackbone)", 939_120,
        _MOBILENET_V3_SMALL, _mobilenet_v3_blocks(11), preset="mobilenet_v3_small",
        published_as="unrounded_se",
        weights={"imagenet": "mobilenet_v3_small_imagenet"},
    ),
    Architecture(
        "mobilenet_v3_large_backbone", "MobileNetV3Backbone", "mobilenet_v3",
        "MobileNetV3 Large (keras_cv.models.MobileNetV3LargeBackbone)", 2_996_352,
        _MOBILENET_V3_LARGE, _mobilenet_v3_blocks(15), preset="mobilenet_v3_large",
        published_as="unrounded_se",
        weights={"imagenet": "mobilenet_v3_large_imagenet"},
    ),
    # --- CSPDarkNet ---
    *(
        Architecture(
            f"csp_darknet_{size}_backbone", "CSPDarkNetBackbone", "csp_darknet",
            f"CSPDarkNet-{size.upper()} (keras_cv.models.CSPDarkNet{label}Backbone)", params,
            {"stackwise_channels": channels, "stackwise_depth": depth, "use_depthwise": False},
            CSP_DARKNET_BLOCKS, preset=f"csp_darknet_{size}",
            weights={"imagenet": f"csp_darknet_{size}_imagenet"} if size in ("tiny", "l") else {},
        )
        for size, label, channels, depth, params in (
            ("tiny", "Tiny", [48, 96, 192, 384], [1, 3, 3, 1], 2_380_416),
            ("s", "S", [64, 128, 256, 512], [1, 3, 3, 1], 4_223_488),
            ("m", "M", [96, 192, 384, 768], [2, 6, 6, 2], 12_374_400),
            ("l", "L", [128, 256, 512, 1024], [3, 9, 9, 3], 27_111_424),
            ("xl", "XL", [170, 340, 680, 1360], [4, 12, 12, 4], 56_837_970),
        )
    ),
    # --- EfficientNet V1 ---
    *(
        Architecture(
            f"efficientnetv1_{b}_backbone", "EfficientNetV1Backbone", "efficientnet_v1",
            f"EfficientNetV1-{b.upper()} (keras_cv.models.EfficientNetV1{b.upper()}Backbone)",
            params, _effnet_v1(width, depth, dropout), _efficientnet_blocks(7),
            preset=f"efficientnetv1_{b}", published_as="identity_expansion",
            default_input_shape=(size, size, 3),
        )
        for b, width, depth, dropout, size, params in (
            ("b0", 1.0, 1.0, 0.2, 224, 4_049_564),
            ("b1", 1.0, 1.1, 0.2, 240, 6_575_232),
            ("b2", 1.1, 1.2, 0.3, 260, 7_768_562),
            ("b3", 1.2, 1.4, 0.3, 300, 10_783_528),
            ("b4", 1.4, 1.8, 0.4, 380, 17_673_816),
            ("b5", 1.6, 2.2, 0.4, 456, 28_513_520),
            ("b6", 1.8, 2.6, 0.5, 528, 40_960_136),
            ("b7", 2.0, 3.1, 0.5, 600, 64_097_680),
        )
    ),
    # --- EfficientNet Lite ---
    *(
        Architecture(
            f"efficientnetlite_{b}_backbone", "EfficientNetLiteBackbone", "efficientnet_lite",
            f"EfficientNetLite-{b.upper()} "
            f"(keras_cv.models.EfficientNetLite{b.upper()}Backbone)",
            params, _effnet_lite(width, depth, dropout), _efficientnet_blocks(7),
            preset=f"efficientnetlite_{b}", published_as="identity_expansion",
            default_input_shape=(size, size, 3),
        )
        for b, width, depth, dropout, size, params in (
            ("b0", 1.0, 1.0, 0.2, 224, 3_413_024),
            ("b1", 1.0, 1.1, 0.2, 240, 4_189_344),
            ("b2", 1.1, 1.2, 0.3, 260, 4_869_168),
            ("b3", 1.2, 1.4, 0.3, 280, 6_992_768),
            ("b4", 1.4, 1.8, 0.3, 300, 11_837_936),
        )
    ),
    # --- EfficientNet V2 ---
    *(
        Architecture(
            f"efficientnetv2_{v}_backbone", "EfficientNetV2Backbone", "efficientnet_v2",
            f"EfficientNetV2-{v.upper()} (keras_cv.models.EfficientNetV2{v.upper()}Backbone)",
            params, _effnet_v2(width, depth, stages), _efficientnet_blocks(n_stages),
            preset=f"efficientnetv2_{v}",
            weights={"imagenet": f"efficientnetv2_{v}_imagenet"} if pretrained else {},
            default_input_shape=(size, size, 3),
        )
        for v, width, depth, stages, n_stages, size, params, pretrained in (
            ("b0", 1.0, 1.0, None, 6, 224, 5_919_312, True),
            ("b1", 1.0, 1.1, None, 6, 240, 6_931_124, True),
            ("b2", 1.1, 1.2, None, 6, 260, 8_769_374, True),
            ("b3", 1.2, 1.4, None, 6, 300, 12_930_622, False),
            ("s", 1.0, 1.0, _EFFNET_V2_S, 6, 384, 20_331_360, True),
            ("m", 1.0, 1.0, _EFFNET_V2_M, 7, 480, 53_150_388, False),
            ("l", 1.0, 1.0, _EFFNET_V2_L, 7, 480, 117_746_848, False),
        )
    ),
    # --- DenseNet ---
    *(
        Architecture(
            f"densenet{n}_backbone", "DenseNetBackbone", "densenet",
            f"DenseNet-{n} (keras_cv.models.DenseNet{n}Backbone)", params,
            {"stackwise_num_repeats": repeats, "compression_ratio": 0.5, "growth_rate": 32},
            DENSENET_BLOCKS, preset=f"densenet{n}", published_as=None,
            weights={"imagenet": f"densenet{n}_imagenet"},
        )
        for n, repeats, params in (
            (121, [6, 12, 24, 16], 7_037_504),
            (169, [6, 12, 32, 32], 12_642_880),
            (201, [6, 12, 48, 32], 18_321_984),
        )
    ),
    # --- MiT (SegFormer encoders) ---
    *(
        Architecture(
            f"mit_{b}_backbone", "MiTBackbone", "mit",
            f"Mix Transformer {b.upper()}, the SegFormer encoder "
            f"(keras_cv.models.MiT{b.upper()}Backbone)",
            params, {"embedding_dims": dims, "depths": depths}, MIT_BLOCKS, preset=f"mit_{b}",
            published_as="classifier_10",
            weights={"imagenet": "mit_b0_imagenet"} if b == "b0" else {},
        )
        for b, dims, depths, params in (
            ("b0", [32, 64, 160, 256], [2, 2, 2, 2], 3_319_392),
            ("b1", [64, 128, 320, 512], [2, 2, 2, 2], 13_151_424),
            ("b2", [64, 128, 320, 512], [3, 4, 6, 3], 24_196_288),
            ("b3", [64, 128, 320, 512], [3, 4, 18, 3], 44_072_128),
            ("b4", [64, 128, 320, 512], [3, 8, 27, 3], 60_842_688),
            ("b5", [64, 128, 320, 512], [3, 6, 40, 3], 81_443_008),
        )
    ),
    # --- VGG16 ---
    Architecture(
        "vgg16_backbone", "VGG16Backbone", "vgg", "VGG16 (keras_cv.models.VGG16Backbone)",
        14_714_688, {"include_top": False}, VGG16_BLOCKS, published_as=None,
    ),
    # --- ViTDet (the Segment Anything image encoders) ---
    *(
        Architecture(
            f"vitdet_{s}_backbone", "ViTDetBackbone", "vitdet",
            f"ViTDet-{s.upper()}, the Segment Anything image encoder "
            f"(keras_cv.models.ViTDet{s.upper()}Backbone)",
            params, _vitdet(*args), _vitdet_blocks(args[1]), preset=f"vitdet_{size}",
            weights={"sa1b": f"vitdet_{size}_sa1b"}, default_input_shape=(1024, 1024, 3),
            min_input_size=224,
        )
        for s, size, args, params in (
            ("b", "base", (768, 12, 3072, 12, [2, 5, 8, 11]), 89_670_912),
            ("l", "large", (1024, 24, 4096, 16, [5, 11, 17, 23]), 308_278_272),
            ("h", "huge", (1280, 32, 5120, 16, [7, 15, 23, 31]), 637_026_048),
        )
    ),
    # --- YOLOV8 ---
    *(
        Architecture(
            f"yolo_v8_{s}_backbone", "YOLOV8Backbone", "yolo_v8",
            f"YOLOV8-{s.upper()} feature extractor (keras_cv.models.YOLOV8Backbone)", params,
            {"stackwise_channels": channels, "stackwise_depth": depth, "activation": "swish"},
            YOLO_V8_BLOCKS, preset=f"yolo_v8_{s}_backbone",
            weights={"coco": f"yolo_v8_{s}_backbone_coco"},
        )
        for s, channels, depth, params in (
            ("xs", [32, 64, 128, 256], [1, 2, 2, 1], 1_277_680),
            ("s", [64, 128, 256, 512], [1, 2, 2, 1], 5_089_760),
            ("m", [96, 192, 384, 576], [2, 4, 4, 2], 11_872_464),
            ("l", [128, 256, 512, 512], [3, 6, 6, 3], 19_831_744),
            ("xl", [160, 320, 640, 640], [3, 6, 6, 3], 30_972_080),
        )
    ),
)

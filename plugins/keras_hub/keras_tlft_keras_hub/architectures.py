"""keras-hub's image backbones for classification: static metadata and architecture arguments.

One row per keras-hub preset of the families that have an ``ImageClassifier`` task (CSPNet, DeiT,
DenseNet, EfficientNet, HGNetV2, MiT, MobileNetV3, ResNet v1/v2/vd, Swin, VGG, ViT, Xception)
and of the self-supervised ViTs that are fine-tuned for classification (DINOv2, DINOv3);
the row's name is the preset's name. keras-hub keeps every preset's configuration on Kaggle, so
each row carries the explicit constructor arguments (``config``), taken from keras-hub's own timm
and transformers converters (``keras_hub.src.utils.timm``/``transformers``) and its checkpoint
conversion scripts; the builder passes them to the family's ``keras_hub.models.*Backbone``.

Not registered, because they are not a classification backbone: the task models and their
backbones (D-FINE, RetinaNet: detection; DeepLabV3, BASNet, SAM, SAM3: segmentation;
DepthAnything: depth; PARSeq: text recognition), the vision towers of multimodal models (CLIP,
SigLIP, MetaCLIP 2, PaliGemma, Gemma 3n's MobileNetV5, whose one preset is that encoder),
VideoPrism (video) and the image generators (Stable Diffusion 3, Flux).

``params`` is ``count_params()`` of the backbone built from ``config`` at
``default_input_shape`` with keras-hub 0.32.0 and Keras 3.15, written in as a literal so that
``keras-tlft list`` needs no TensorFlow; the test suite checks every one against a fresh build.
DINOv2's count depends on the input size: it keeps the position embeddings at 518x518 (37x37
patches, non-trainable) and, trainable, their interpolation to the input size; both are counted,
so ``default_input_shape`` is 518, the size DINOv2 was trained at. DINOv3 uses rotary position
embeddings and has the same count at any size.

keras-hub's published ``params`` figure for a preset is counted in one of these ways, recorded in
``published_as`` and checked by the test suite against the installed keras-hub's metadata:

- ``"backbone"``: the backbone's ``count_params()``, equal to ``params``;
- ``"classifier"``: the ``ImageClassifier`` with 1000 classes, ``count_params()`` (ResNet-vd);
- ``"classifier_trainable"``: its trainable weights only, as PyTorch counts them (BatchNorm
  statistics left out): the timm-converted CSPNet and EfficientNet presets;
- ``"classifier_10"``: an ``ImageClassifier`` with 10 classes (every MiT preset);
- ``"copied"``: the figure of the preset named in ``published_from``, a different network
  (``resnet_v2_*`` carry the figures of the ResNet v1 of the same depth), which the tests check
  against that row's own build;
- ``"rounded"``: the backbone's count rounded (half up) at the place of the figure's last
  nonzero digit: DINOv3's 21_600_000 is ``params`` (21_596_544) to the hundred thousand,
  6_700_000_000 the 7B's 6_716_035_072 to the hundred million.

``output`` adapts the backbones whose output is not one feature map, so that keras-tlft's
heads (``gap``, ``flatten``...) apply: ``"tokens"`` reshapes the ``(tokens, dim)`` output of
ViT, DeiT, DINOv2 and DINOv3 to ``(1, tokens, dim)`` (``gap`` then averages every token: class,
registers and patches), ``"grid"`` reshapes Swin's output to its ``(H/32, W/32, dim)`` grid and
``"last_stage"`` keeps HGNetV2's last-stage map. No parameters are added.

keras-hub's ViTs (ViT, DINOv2, DINOv3) run their transformer layers inside one encoder layer;
the builder rebuilds them with each transformer layer a layer of the model (see
:mod:`keras_tlft_keras_hub.transformer_layers`), so they unfreeze in ``embedding``, one block
per transformer layer (DINO's ``layer_0``..., ViT's ``block_1``...) and
``final_norm``: gradual unfreezing and layer-wise learning-rate decay then act per transformer
layer, as timm's and BEiT's do (DeiT, not rebuilt, unfreezes in ``embedding`` and ``encoder``:
see that module for why). The DINOs' preprocessing
is ``"torch"``: keras-hub's conversion scripts build the image converter from
Hugging Face's processor, ImageNet's mean and std on 0-1 pixels; for the SAT-493M presets too,
whose processor carries the same values (the DINOv3 README gives satellite statistics for them).
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_tlft_keras_hub.transformer_layers import transformer_blocks


@dataclass(frozen=True)
class Architecture:
    """One keras-hub preset and what keras-tlft needs to know about it."""

    name: str
    constructor: str
    family: str
    description: str
    params: int
    config: dict
    blocks: tuple
    preprocessing: str
    weights: str = "imagenet"
    published_as: str = "backbone"
    published_from: str | None = None
    default_input_shape: tuple = (224, 224, 3)
    min_input_size: int = 32
    shape_argument: str = "image_shape"
    output: str | None = None


def _stages(prefix_fmt: str, name_fmt: str, numbers) -> tuple:
    return tuple((name_fmt.format(i), "^" + prefix_fmt.format(i)) for i in numbers)


def _square(size: int) -> tuple:
    return (size, size, 3)


RESNET_BLOCKS = (("stem", "^conv1_"),) + _stages("stack{}_", "stack_{}", range(4))
DENSENET_BLOCKS = (("stem", "^conv1_"),) + _stages("stack{}_", "stack{}", range(1, 5))
MIT_BLOCKS = _stages("patch_and_embed_{}$", "stage_{}", range(4))
XCEPTION_BLOCKS = _stages("block{}_", "block{}", range(1, 15))
DEIT_BLOCKS = (("embedding", "^(images|input)"), ("encoder", "^deit_encoder$"))
SWIN_BLOCKS = (("stem", "^patch_embedding$"),) + _stages("stage_{}$", "stage_{}", range(4))
HGNETV2_BLOCKS = (("embedder", "^embedder$"), ("encoder", "^encoder$"))


def _cspnet_blocks(n_stages: int) -> tuple:
    return (("stem", "^csp_stem_"),) + _stages("stage_{}_", "stage_{}", range(n_stages))


def _vgg_blocks() -> tuple:
    return _stages("block{}_", "block{}", range(1, 6))


def _efficientnet_blocks(n_stages: int) -> tuple:
    return (
        ("stem", "^stem_"),
        *((f"block{i}", rf"^block{i}[a-z]_") for i in range(1, n_stages + 1)),
        ("top", "^top_"),
    )


def _mobilenet_blocks(n_stacks: int) -> tuple:
    """The stem, the depthwise block (``block_0``), one block per stack."""
    return (("stem", "^input_"),) + _stages("block_{}_", "block_{}", range(n_stacks + 1))


# --- ResNet (timm's resnet/resnetv2 and PaddleClas's ResNet-vd) ------------------------------


def _resnet(blocks, block_type, pre_activation=False, vd=False) -> dict:
    return {
        "input_conv_filters": [32, 32, 64] if vd else [64],
        "input_conv_kernel_sizes": [3, 3, 3] if vd else [7],
        "stackwise_num_filters": [64, 128, 256, 512],
        "stackwise_num_blocks": blocks,
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": block_type,
        "use_pre_activation": pre_activation,
    }


_DEPTHS = {
    18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
    152: [3, 8, 36, 3], 200: [3, 12, 48, 3],
}


def _resnet_row(name, n, params, *, v2=False, vd=False, published_as="backbone",
                copied_from=None):
    basic = n < 50
    block_type = ("basic_block" if basic else "bottleneck_block") + ("_vd" if vd else "")
    kind = "ResNet-vd" if vd else ("ResNetV2" if v2 else "ResNet")
    return Architecture(
        name, "ResNetBackbone", "resnet_vd" if vd else ("resnet_v2" if v2 else "resnet"),
        f"{kind}-{n}, ImageNet-1k (keras-hub preset)", params,
        _resnet(_DEPTHS[n], block_type, pre_activation=v2, vd=vd), RESNET_BLOCKS, "torch",
        published_as=published_as, published_from=copied_from,
    )


RESNETS = (
    _resnet_row("resnet_18_imagenet", 18, 11_186_112),
    _resnet_row("resnet_50_imagenet", 50, 23_561_152),
    _resnet_row("resnet_101_imagenet", 101, 42_605_504),
    _resnet_row("resnet_152_imagenet", 152, 58_295_232),
    _resnet_row("resnet_v2_50_imagenet", 50, 23_545_792, v2=True, published_as="copied",
                copied_from="resnet_50_imagenet"),
    _resnet_row("resnet_v2_101_imagenet", 101, 42_590_144, v2=True, published_as="copied",
                copied_from="resnet_101_imagenet"),
    _resnet_row("resnet_vd_18_imagenet", 18, 11_209_824, vd=True, published_as="classifier"),
    _resnet_row("resnet_vd_34_imagenet", 34, 21_325_408, vd=True, published_as="classifier"),
    *(
        _resnet_row(f"resnet_vd_50{tag}_imagenet", 50, 23_580_512, vd=True,
                    published_as="classifier")
        for tag in ("", "_ssld", "_ssld_v2", "_ssld_v2_fix")
    ),
    _resnet_row("resnet_vd_101_imagenet", 101, 42_624_864, vd=True, published_as="classifier"),
    _resnet_row("resnet_vd_101_ssld_imagenet", 101, 42_624_864, vd=True,
                published_as="classifier"),
    _resnet_row("resnet_vd_152_imagenet", 152, 58_314_592, vd=True, published_as="classifier"),
    _resnet_row("resnet_vd_200_imagenet", 200, 72_884_064, vd=True, published_as="classifier"),
)

# --- VGG, DenseNet, Xception -----------------------------------------------------------------

VGGS = tuple(
    Architecture(
        f"vgg_{n}_imagenet", "VGGBackbone", "vgg", f"VGG-{n}, ImageNet-1k (keras-hub preset)",
        params,
        {"stackwise_num_repeats": repeats, "stackwise_num_filters": [64, 128, 256, 512, 512]},
        _vgg_blocks(), "torch",
    )
    for n, repeats, params in (
        (11, [1, 1, 2, 2, 2], 9_220_480),
        (13, [2, 2, 2, 2, 2], 9_404_992),
        (16, [2, 2, 3, 3, 3], 14_714_688),
        (19, [2, 2, 4, 4, 4], 20_024_384),
    )
)

DENSENETS = tuple(
    Architecture(
        f"densenet_{n}_imagenet", "DenseNetBackbone", "densenet",
        f"DenseNet-{n}, ImageNet-1k (keras-hub preset)", params,
        {"stackwise_num_repeats": repeats, "compression_ratio": 0.5, "growth_rate": 32},
        DENSENET_BLOCKS, "torch",
    )
    for n, repeats, params in (
        (121, [6, 12, 24, 16], 7_037_504),
        (169, [6, 12, 32, 32], 12_642_880),
        (201, [6, 12, 48, 32], 18_321_984),
    )
)

XCEPTIONS = (
    Architecture(
        "xception_41_imagenet", "XceptionBackbone", "xception",
        "Xception-41, ImageNet-1k (keras-hub preset)", 20_861_480,
        {
            "stackwise_conv_filters": [[32, 64], [128, 128], [256, 256], [728, 728]]
            + [[728, 728, 728]] * 8
            + [[728, 1024], [1536, 2048]],
            "stackwise_pooling": [False, True, True, True] + [False] * 8 + [True, False],
        },
        XCEPTION_BLOCKS, "tf", default_input_shape=_square(299), min_input_size=71,
    ),
)

# --- CSPNet (timm) ---------------------------------------------------------------------------

_CSP_COMMON = {"avg_down": False, "groups": 1}
_CSPDARKNET53 = {
    "stem_filters": 32, "stem_kernel_size": 3, "stem_strides": 1,
    "stackwise_depth": [1, 2, 8, 8, 4], "stackwise_num_filters": [64, 128, 256, 512, 1024],
    "bottle_ratio": [0.5, 1.0], "block_ratio": [1.0, 0.5], "expand_ratio": [2.0, 1.0],
    "stage_type": "csp", "block_type": "dark_block", "stackwise_strides": [2, 2, 2, 2, 2],
    "down_growth": True, "stem_pooling": None, "stem_padding": "same", "cross_linear": False,
    **_CSP_COMMON,
}
_DARKNET53 = {
    **_CSPDARKNET53, "bottle_ratio": [0.5], "block_ratio": [1.0], "expand_ratio": [1.0],
    "stage_type": "dark", "down_growth": False,
}
_CSPRESNET50 = {
    "stem_filters": 64, "stem_kernel_size": 7, "stem_strides": 4,
    "stackwise_depth": [3, 3, 5, 2], "stackwise_num_filters": [128, 256, 512, 1024],
    "bottle_ratio": [0.5], "block_ratio": [1.0], "expand_ratio": [2.0], "stage_type": "csp",
    "block_type": "bottleneck_block", "stackwise_strides": [1, 2, 2, 2], "down_growth": False,
    "stem_pooling": "max", "stem_padding": "valid", "cross_linear": True, **_CSP_COMMON,
}
_CSPRESNEXT50 = {
    **_CSPRESNET50, "stackwise_num_filters": [256, 512, 1024, 2048], "bottle_ratio": [1.0],
    "block_ratio": [0.5], "expand_ratio": [1.0], "groups": 32,
}

CSPNETS = tuple(
    Architecture(
        name, "CSPNetBackbone", "cspnet", f"{label}, ImageNet-1k (keras-hub preset)", params,
        config, _cspnet_blocks(stages), "torch", published_as="classifier_trainable",
        default_input_shape=_square(size),
    )
    for name, label, config, stages, size, params in (
        ("csp_darknet_53_ra_imagenet", "CSPDarkNet-53", _CSPDARKNET53, 5, 256, 26_652_512),
        ("csp_resnext_50_ra_imagenet", "CSPResNeXt-50", _CSPRESNEXT50, 4, 256, 18_578_368),
        ("csp_resnet_50_ra_imagenet", "CSPResNet-50", _CSPRESNET50, 4, 256, 20_631_488),
        ("darknet_53_imagenet", "DarkNet-53", _DARKNET53, 5, 256, 40_620_640),
    )
)

# --- EfficientNet (timm) ---------------------------------------------------------------------

_EFFNET_BASE = {
    "stackwise_kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
    "stackwise_num_repeats": [1, 2, 2, 3, 3, 4, 1],
    "stackwise_input_filters": [32, 16, 24, 40, 80, 112, 192],
    "stackwise_output_filters": [16, 24, 40, 80, 112, 192, 320],
    "stackwise_expansion_ratios": [1, 6, 6, 6, 6, 6, 6],
    "stackwise_strides": [1, 2, 2, 2, 1, 2, 1],
    "stackwise_block_types": ["v1"] * 7,
    "min_depth": None,
    "include_stem_padding": True,
    "use_depth_divisor_as_min_depth": True,
    "cap_round_filter_decrease": True,
    "stem_conv_padding": "valid",
    "batch_norm_momentum": 0.9,
    "batch_norm_epsilon": 1e-5,
    "dropout": 0,
    "projection_activation": None,
}


def _effnet_b(width: float, depth: float, se: float = 0.25, **extra) -> dict:
    return {
        **_EFFNET_BASE,
        "stackwise_width_coefficients": [width] * 7,
        "stackwise_depth_coefficients": [depth] * 7,
        "stackwise_squeeze_and_excite_ratios": [se] * 7,
        **extra,
    }


_EFFNET_EDGE = {
    "stackwise_kernel_sizes": [3, 3, 3, 5, 5, 5],
    "stackwise_num_repeats": [1, 2, 4, 5, 4, 2],
    "stackwise_input_filters": [32, 24, 32, 48, 96, 144],
    "stackwise_output_filters": [24, 32, 48, 96, 144, 192],
    "stackwise_expansion_ratios": [4, 8, 8, 8, 8, 8],
    "stackwise_strides": [1, 2, 2, 2, 1, 2],
    "stackwise_squeeze_and_excite_ratios": [0] * 6,
    "stackwise_block_types": ["fused"] * 3 + ["unfused"] * 3,
    "stackwise_force_input_filters": [24, 0, 0, 0, 0, 0],
    "stackwise_nores_option": [True] + [False] * 5,
    "activation": "relu",
}


def _effnet_edge(width: float, depth: float) -> dict:
    return {
        **_EFFNET_BASE,
        **_EFFNET_EDGE,
        "stackwise_width_coefficients": [width] * 6,
        "stackwise_depth_coefficients": [depth] * 6,
    }


_EFFNET_V2_RW = {
    "stackwise_kernel_sizes": [3, 3, 3, 3, 3, 3],
    "stackwise_num_repeats": [2, 4, 4, 6, 9, 15],
    "stackwise_input_filters": [24, 24, 48, 64, 128, 160],
    "stackwise_output_filters": [24, 48, 64, 128, 160, 272],
    "stackwise_expansion_ratios": [1, 4, 4, 4, 6, 6],
    "stackwise_strides": [1, 2, 2, 2, 1, 2],
    "stackwise_squeeze_and_excite_ratios": [0, 0, 0, 0.25, 0.25, 0.25],
    "stackwise_block_types": ["fused"] * 3 + ["unfused"] * 3,
    "stackwise_force_input_filters": [0] * 6,
    "stackwise_nores_option": [False] * 6,
    "activation": "silu",
}


def _effnet_v2_rw(width, depths, output_filters=272, first="fused", num_features=None) -> dict:
    config = {
        **_EFFNET_BASE,
        **_EFFNET_V2_RW,
        "stackwise_width_coefficients": [width] * 6,
        "stackwise_depth_coefficients": depths,
        "stackwise_output_filters": [24, 48, 64, 128, 160, output_filters],
        "stackwise_block_types": [first] + ["fused"] * 2 + ["unfused"] * 3,
    }
    if num_features is not None:
        config["num_features"] = num_features
    return config


def _effnet_row(name, label, config, stages, size, params) -> Architecture:
    return Architecture(
        name, "EfficientNetBackbone", "efficientnet",
        f"{label}, ImageNet-1k (keras-hub preset)", params, config,
        _efficientnet_blocks(stages), "torch", published_as="classifier_trainable",
        default_input_shape=_square(size), shape_argument="input_shape",
    )


EFFICIENTNETS = (
    _effnet_row("efficientnet_b0_ra_imagenet", "EfficientNet-B0", _effnet_b(1.0, 1.0), 7, 224,
                4_049_564),
    _effnet_row("efficientnet_b0_ra4_e3600_r224_imagenet", "EfficientNet-B0",
                _effnet_b(1.0, 1.0), 7, 224, 4_049_564),
    _effnet_row("efficientnet_b1_ft_imagenet", "EfficientNet-B1", _effnet_b(1.0, 1.1), 7, 240,
                6_575_232),
    _effnet_row("efficientnet_b1_ra4_e3600_r240_imagenet", "EfficientNet-B1",
                _effnet_b(1.0, 1.1), 7, 240, 6_575_232),
    _effnet_row("efficientnet_b2_ra_imagenet", "EfficientNet-B2", _effnet_b(1.1, 1.2), 7, 256,
                7_768_562),
    _effnet_row("efficientnet_b3_ra2_imagenet", "EfficientNet-B3", _effnet_b(1.2, 1.4), 7, 288,
                10_783_528),
    _effnet_row("efficientnet_b4_ra2_imagenet", "EfficientNet-B4", _effnet_b(1.4, 1.8), 7, 320,
                17_673_816),
    _effnet_row("efficientnet_b5_sw_imagenet", "EfficientNet-B5", _effnet_b(1.6, 2.2), 7, 416,
                28_513_520),
    _effnet_row("efficientnet_b5_sw_ft_imagenet", "EfficientNet-B5", _effnet_b(1.6, 2.2), 7,
                448, 28_513_520),
    _effnet_row("efficientnet_el_ra_imagenet", "EfficientNet-EdgeTPU-L", _effnet_edge(1.2, 1.4),
                6, 300, 9_144_920),
    _effnet_row("efficientnet_em_ra2_imagenet", "EfficientNet-EdgeTPU-M",
                _effnet_edge(1.0, 1.1), 6, 240, 5_686_304),
    _effnet_row("efficientnet_es_ra_imagenet", "EfficientNet-EdgeTPU-S",
                _effnet_edge(1.0, 1.0), 6, 224, 4_208_832),
    _effnet_row("efficientnet2_rw_m_agc_imagenet", "EfficientNetV2-rw-M",
                _effnet_v2_rw(1.2, [1.2] * 4 + [1.6] * 2, num_features=1792), 6, 320,
                51_390_674),
    _effnet_row("efficientnet2_rw_s_ra2_imagenet", "EfficientNetV2-rw-S",
                _effnet_v2_rw(1.0, [1.0] * 6, num_features=1792), 6, 288, 22_309_144),
    _effnet_row("efficientnet2_rw_t_ra2_imagenet", "EfficientNetV2-rw-T",
                _effnet_v2_rw(0.8, [0.9] * 6, output_filters=256, first="cba"), 6, 224,
                12_743_412),
    _effnet_row("efficientnet_lite0_ra_imagenet", "EfficientNet-Lite0",
                _effnet_b(1.0, 1.0, se=0, activation="relu6"), 7, 224, 3_413_024),
)

# --- HGNetV2 (timm, SSLD checkpoints: no learnable affine blocks) ----------------------------


def _hgnetv2(depths, embedding, hidden, stem, stage_filters) -> dict:
    return {
        "depths": depths,
        "embedding_size": embedding,
        "hidden_sizes": hidden,
        "stem_channels": stem,
        "hidden_act": "relu",
        "use_learnable_affine_block": False,
        "stackwise_stage_filters": stage_filters,
        "apply_downsample": [False, True, True, True],
        "use_lightweight_conv_block": [False, False, True, True],
    }


_HGNETV2 = {
    "b4": _hgnetv2([1, 1, 3, 1], 48, [128, 512, 1024, 2048], [3, 32, 48],
                   [[48, 48, 128, 1, 6, 3], [128, 96, 512, 1, 6, 3], [512, 192, 1024, 3, 6, 5],
                    [1024, 384, 2048, 1, 6, 5]]),
    "b5": _hgnetv2([1, 2, 5, 2], 64, [128, 512, 1024, 2048], [3, 32, 64],
                   [[64, 64, 128, 1, 6, 3], [128, 128, 512, 2, 6, 3], [512, 256, 1024, 5, 6, 5],
                    [1024, 512, 2048, 2, 6, 5]]),
    "b6": _hgnetv2([2, 3, 6, 3], 96, [192, 512, 1024, 2048], [3, 48, 96],
                   [[96, 96, 192, 2, 6, 3], [192, 192, 512, 3, 6, 3], [512, 384, 1024, 6, 6, 5],
                    [1024, 768, 2048, 3, 6, 5]]),
}

HGNETV2S = tuple(
    Architecture(
        f"hgnetv2_{b}_{tag}", "HGNetV2Backbone", "hgnetv2",
        f"HGNetV2-{b.upper()}, SSLD-distilled, ImageNet-1k (keras-hub preset)", params,
        _HGNETV2[b], HGNETV2_BLOCKS, "torch", output="last_stage",
    )
    for b, tag, params in (
        ("b4", "ssld_stage2_ft_in1k", 13_599_072),
        ("b5", "ssld_stage1_in22k_in1k", 33_419_680),
        ("b5", "ssld_stage2_ft_in1k", 33_419_680),
        ("b6", "ssld_stage1_in22k_in1k", 69_179_888),
        ("b6", "ssld_stage2_ft_in1k", 69_179_888),
    )
)

# --- MobileNetV3 (timm) ----------------------------------------------------------------------

_MOBILENET_SMALL_050 = {
    "stackwise_num_blocks": [2, 3, 2, 3],
    "stackwise_expansion": [[40, 56], [64, 144, 144], [72, 72], [144, 288, 288]],
    "stackwise_num_filters": [[16, 16], [24, 24, 24], [24, 24], [48, 48, 48]],
    "stackwise_kernel_size": [[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
    "stackwise_num_strides": [[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
    "stackwise_se_ratio": [[None, None], [0.25] * 3, [0.25] * 2, [0.25] * 3],
    "stackwise_activation": [["relu"] * 2, ["hard_swish"] * 3, ["hard_swish"] * 2,
                             ["hard_swish"] * 3],
    "stackwise_padding": [[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
    "output_num_filters": 1024,
    "input_num_filters": 16,
    "depthwise_filters": 8,
    "depthwise_stride": 2,
    "depthwise_residual": False,
    "squeeze_and_excite": 0.5,
    "last_layer_filter": 288,
    "input_activation": "hard_swish",
    "output_activation": "hard_swish",
}
_MOBILENET_SMALL_100 = {
    **_MOBILENET_SMALL_050,
    "stackwise_expansion": [[72, 88], [96, 240, 240], [120, 144], [288, 576, 576]],
    "stackwise_num_filters": [[24, 24], [40, 40, 40], [48, 48], [96, 96, 96]],
    "depthwise_filters": 16,
    "last_layer_filter": 576,
}
_MOBILENET_LARGE_100 = {
    **_MOBILENET_SMALL_050,
    "stackwise_num_blocks": [2, 3, 4, 2, 3],
    "stackwise_expansion": [[64, 72], [72, 120, 120], [240, 200, 184, 184], [480, 672],
                            [672, 960, 960]],
    "stackwise_num_filters": [[24, 24], [40, 40, 40], [80, 80, 80, 80], [112, 112],
                              [160, 160, 160]],
    "stackwise_kernel_size": [[3, 3], [5, 5, 5], [3, 3, 3, 3], [3, 3], [5, 5, 5]],
    "stackwise_num_strides": [[2, 1], [2, 1, 1], [2, 1, 1, 1], [1, 1], [2, 1, 1]],
    "stackwise_se_ratio": [[None, None], [0.25] * 3, [None] * 4, [0.25] * 2, [0.25] * 3],
    "stackwise_activation": [["relu"] * 2, ["relu"] * 3, ["hard_swish"] * 4,
                             ["hard_swish"] * 2, ["hard_swish"] * 3],
    "stackwise_padding": [[1, 1], [2, 2, 2], [1, 1, 1, 1], [1, 1], [2, 2, 2]],
    "depthwise_filters": 16,
    "depthwise_stride": 1,
    "depthwise_residual": True,
    "squeeze_and_excite": None,
    "last_layer_filter": 960,
}

MOBILENETS = tuple(
    Architecture(
        name, "MobileNetBackbone", "mobilenet_v3", f"{label} (keras-hub preset)", params, config,
        _mobilenet_blocks(stacks), "torch",
    )
    for name, label, config, stacks, params in (
        ("mobilenet_v3_small_050_imagenet", "MobileNetV3 Small 0.5, ImageNet-1k",
         _MOBILENET_SMALL_050, 4, 278_784),
        ("mobilenet_v3_small_100_imagenet", "MobileNetV3 Small 1.0, ImageNet-1k",
         _MOBILENET_SMALL_100, 4, 939_120),
        ("mobilenet_v3_large_100_imagenet", "MobileNetV3 Large 1.0, ImageNet-1k",
         _MOBILENET_LARGE_100, 5, 2_996_352),
        ("mobilenet_v3_large_100_imagenet_21k", "MobileNetV3 Large 1.0, ImageNet-21k",
         _MOBILENET_LARGE_100, 5, 2_996_352),
    )
)

# --- MiT (SegFormer encoders; params do not depend on the input size) ------------------------

_MIT_DEPTHS = {
    "b0": [2, 2, 2, 2], "b1": [2, 2, 2, 2], "b2": [3, 4, 6, 3], "b3": [3, 4, 18, 3],
    "b4": [3, 8, 27, 3], "b5": [3, 6, 40, 3],
}
_MIT_PARAMS = {
    "b0": 3_319_392, "b1": 13_151_424, "b2": 24_196_288, "b3": 44_072_128,
    "b4": 60_842_688, "b5": 81_443_008,
}


def _mit(b: str) -> dict:
    return {
        "layerwise_depths": _MIT_DEPTHS[b],
        "num_layers": 4,
        "layerwise_num_heads": [1, 2, 5, 8],
        "layerwise_sr_ratios": [8, 4, 2, 1],
        "max_drop_path_rate": 0.1,
        "layerwise_patch_sizes": [7, 3, 3, 3],
        "layerwise_strides": [4, 2, 2, 2],
        "hidden_dims": [32, 64, 160, 256] if b == "b0" else [64, 128, 320, 512],
    }


MITS = tuple(
    Architecture(
        f"mit_{b}_{data}_{size}", "MiTBackbone", "mit",
        f"Mix Transformer {b.upper()}, the SegFormer encoder, trained on "
        f"{'ADE20k' if data == 'ade20k' else 'Cityscapes'} (keras-hub preset)",
        _MIT_PARAMS[b], _mit(b), MIT_BLOCKS, "torch", weights=data,
        published_as="classifier_10", default_input_shape=_square(size),
    )
    for b, data, size in (
        *((b, "ade20k", 512) for b in ("b0", "b1", "b2", "b3", "b4")),
        ("b5", "ade20k", 640),
        *((b, "cityscapes", 1024) for b in ("b0", "b1", "b2", "b3", "b4", "b5")),
    )
)

# --- ViT, DeiT (Hugging Face configs) and Swin -----------------------------------------------

_VIT_SIZES = {
    "base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "huge": (1280, 32, 16, 5120),
}


def _vit(size, patch, image) -> dict:
    hidden, layers, heads, mlp = _VIT_SIZES[size]
    return {
        "image_shape": _square(image), "patch_size": (patch, patch), "num_layers": layers,
        "num_heads": heads, "hidden_dim": hidden, "mlp_dim": mlp,
    }


VITS = tuple(
    Architecture(
        f"vit_{size}_patch{patch}_{image}_{data}", "ViTBackbone", "vit",
        f"ViT-{size.capitalize()}/{patch} at {image}, "
        f"{'ImageNet-21k' if data == 'imagenet21k' else 'ImageNet-1k'} (keras-hub preset)",
        params, _vit(size, patch, image), transformer_blocks("ViTBackbone", _VIT_SIZES[size][1]),
        "tf", weights=data,
        default_input_shape=_square(image), min_input_size=image, output="tokens",
    )
    for size, patch, image, data, params in (
        ("base", 16, 224, "imagenet", 85_798_656),
        ("base", 16, 384, "imagenet", 86_090_496),
        ("large", 16, 224, "imagenet", 303_301_632),
        ("large", 16, 384, "imagenet", 303_690_752),
        ("base", 32, 384, "imagenet", 87_528_192),
        ("large", 32, 384, "imagenet", 305_607_680),
        ("base", 16, 224, "imagenet21k", 85_798_656),
        ("base", 32, 224, "imagenet21k", 87_455_232),
        ("huge", 14, 224, "imagenet21k", 630_764_800),
        ("large", 16, 224, "imagenet21k", 303_301_632),
        ("large", 32, 224, "imagenet21k", 305_510_400),
    )
)

_DEIT_SIZES = {"base": (768, 12, 12, 3072), "small": (384, 12, 6, 1536), "tiny": (192, 12, 3, 768)}

DEITS = tuple(
    Architecture(
        f"deit_{size}_distilled_patch16_{image}_imagenet", "DeiTBackbone", "deit",
        f"DeiT-{size.capitalize()} distilled /16 at {image}, ImageNet-1k (keras-hub preset)",
        params,
        {
            "image_shape": _square(image), "patch_size": 16,
            "num_layers": _DEIT_SIZES[size][1], "num_heads": _DEIT_SIZES[size][2],
            "hidden_dim": _DEIT_SIZES[size][0], "intermediate_dim": _DEIT_SIZES[size][3],
            "layer_norm_epsilon": 1e-12,
        },
        DEIT_BLOCKS, "torch", default_input_shape=_square(image), min_input_size=image,
        output="tokens",
    )
    for size, image, params in (
        ("base", 384, 86_092_032),
        ("base", 224, 85_800_192),
        ("tiny", 224, 5_524_800),
        ("small", 224, 21_666_432),
    )
)

_SWIN_SIZES = {
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24]),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32]),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48]),
}

SWINS = tuple(
    Architecture(
        f"swin_{size}_patch4_window{window}_{image}", "SwinTransformerBackbone", "swin",
        f"Swin-{size.capitalize()}, window {window}, at {image} (keras-hub preset)", params,
        {
            "image_shape": _square(image), "patch_size": 4, "embed_dim": _SWIN_SIZES[size][0],
            "depths": _SWIN_SIZES[size][1], "num_heads": _SWIN_SIZES[size][2],
            "window_size": window, "mlp_ratio": 4.0, "qkv_bias": True,
        },
        SWIN_BLOCKS, "torch", default_input_shape=_square(image), min_input_size=image,
        output="grid",
    )
    for size, window, image, params in (
        ("tiny", 7, 224, 27_519_354),
        ("small", 7, 224, 48_837_258),
        ("base", 7, 224, 86_743_224),
        ("base", 12, 384, 86_878_584),
        ("large", 7, 224, 194_995_476),
        ("large", 12, 384, 195_198_516),
    )
)

# --- DINOv2, DINOv3 (self-supervised ViTs; Hugging Face configs) ---------------------------

_DINOV2_SIZES = {  # hidden_dim, layers, heads, label; the giant's MLP is SwiGLU
    "small": (384, 12, 6, "ViT-S/14"), "base": (768, 12, 12, "ViT-B/14"),
    "large": (1024, 24, 16, "ViT-L/14"), "giant": (1536, 40, 24, "ViT-g/14"),
}


def _dinov2(size: str, registers: bool) -> dict:
    """facebook/dinov2-* (HF ``model_type`` ``dinov2``) and facebook/dinov2-with-registers-*
    (``dinov2_with_registers``: 4 registers, antialiased interpolation), through
    ``convert_dinov2.convert_backbone_config``: mlp_ratio 4, layerscale 1.0, trained at 518."""
    hidden, layers, heads, _ = _DINOV2_SIZES[size]
    return {
        "patch_size": 14, "num_layers": layers, "hidden_dim": hidden, "num_heads": heads,
        "intermediate_dim": hidden * 4, "layer_scale_init_value": 1.0,
        "num_register_tokens": 4 if registers else 0, "use_mask_token": True,
        "use_swiglu_ffn": size == "giant", "position_embedding_shape": (518, 518),
        "antialias_in_interpolation": registers,
    }


DINOV2S = tuple(
    Architecture(
        f"dinov2_{'with_registers_' if registers else ''}{size}", "DINOV2Backbone", "dinov2",
        f"DINOv2 {_DINOV2_SIZES[size][3]}{' with registers' if registers else ''}, "
        "self-supervised on LVD-142M (keras-hub preset)",
        params, _dinov2(size, registers),
        transformer_blocks("DINOV2Backbone", _DINOV2_SIZES[size][1]), "torch", weights="lvd142m",
        default_input_shape=_square(518), min_input_size=14, output="tokens",
    )
    for registers, size, params in (
        (False, "small", 22_582_656),
        (False, "base", 87_632_640),
        (False, "large", 305_771_520),
        (False, "giant", 1_138_585_088),
        (True, "small", 22_584_192),
        (True, "base", 87_635_712),
        (True, "large", 305_775_616),
        (True, "giant", 1_138_591_232),
    )
)

_DINOV3_SIZES = {  # hidden_dim, layers, heads, intermediate_dim, gated (SwiGLU) MLP, label
    "small": (384, 12, 6, 1536, False, "ViT-S/16"),
    "small_plus": (384, 12, 6, 1536, True, "ViT-S+/16"),
    "base": (768, 12, 12, 3072, False, "ViT-B/16"),
    "large": (1024, 24, 16, 4096, False, "ViT-L/16"),
    "huge_plus": (1280, 32, 20, 5120, True, "ViT-H+/16"),
    "7b": (4096, 40, 32, 8192, True, "ViT-7B/16"),
}


def _dinov3(size: str) -> dict:
    """facebook/dinov3-vit*16-pretrain-* (HF ``model_type`` ``dinov3_vit``, written by
    transformers' ``convert_dinov3_vit_to_hf.get_dinov3_config``) through
    ``convert_dinov3.convert_backbone_config``: 4 registers, no key bias (the 7B has no query
    or value bias either), RoPE with theta 100, trained at 224."""
    hidden, layers, heads, mlp, gated, _ = _DINOV3_SIZES[size]
    return {
        "patch_size": 16, "num_layers": layers, "hidden_dim": hidden, "num_heads": heads,
        "intermediate_dim": mlp, "layer_scale_init_value": 1.0, "num_register_tokens": 4,
        "use_mask_token": True, "hidden_activation": "silu" if gated else "gelu",
        "use_gated_mlp": gated, "use_query_bias": size != "7b", "use_key_bias": False,
        "use_value_bias": size != "7b", "use_proj_bias": True, "use_mlp_bias": True,
        "layer_norm_eps": 1e-5, "rope_theta": 100.0,
    }


DINOV3S = tuple(
    Architecture(
        f"dinov3_vit_{size}_{data}", "DINOV3Backbone", "dinov3",
        f"DINOv3 {_DINOV3_SIZES[size][5]}, self-supervised on "
        f"{'LVD-1689M' if data == 'lvd1689m' else 'SAT-493M satellite images'} (keras-hub preset)",
        params, _dinov3(size), transformer_blocks("DINOV3Backbone", _DINOV3_SIZES[size][1]),
        "torch", weights=data, published_as="rounded", min_input_size=16, output="tokens",
    )
    for size, data, params in (
        ("small", "lvd1689m", 21_596_544),
        ("small_plus", "lvd1689m", 28_692_864),
        ("base", "lvd1689m", 85_660_416),
        ("large", "lvd1689m", 303_129_600),
        ("huge_plus", "lvd1689m", 840_592_640),
        ("7b", "lvd1689m", 6_716_035_072),
        ("large", "sat493m", 303_129_600),
        ("7b", "sat493m", 6_716_035_072),
    )
)

ARCHITECTURES: tuple[Architecture, ...] = (
    *CSPNETS, *DEITS, *DENSENETS, *DINOV2S, *DINOV3S, *EFFICIENTNETS, *HGNETV2S, *MITS,
    *MOBILENETS, *RESNETS, *SWINS, *VGGS, *VITS, *XCEPTIONS,
)

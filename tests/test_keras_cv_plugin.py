"""The keras-cv backbone plugin (plugins/keras_cv): registration, offline builds, parameter
counts against keras-cv's own preset metadata, blocks, weights errors.

Building the large architectures is marked ``slow`` (run them with ``-m slow``); every entry is
built by some test. Builds that only count parameters and cut blocks run in a Keras
``StatelessScope``, which builds the real model without allocating its weights.
"""

import re
import subprocess
import sys

import keras_tlft_keras_cv as plugin
import pytest
from keras_tlft_keras_cv.architectures import ARCHITECTURES

from keras_tlft.assembly import WeightsDownloadError, load_backbone
from keras_tlft.blocks import cut_into_blocks
from keras_tlft.registry import Registry
from keras_tlft.testing import check_backbone_spec

needs_keras_cv = pytest.mark.skipif(not plugin.is_available(), reason="keras-cv not installed")
BY_NAME = {arch.name: arch for arch in ARCHITECTURES}
SPECS = {spec.name: spec for spec in plugin.SPECS}
# Fast enough for every run: the smallest of each family. The rest are built with -m slow.
FAST = {
    "resnet18_backbone", "resnet18_v2_backbone", "mobilenet_v3_small_backbone",
    "csp_darknet_tiny_backbone", "efficientnetv1_b0_backbone", "efficientnetlite_b0_backbone",
    "efficientnetv2_b0_backbone", "densenet121_backbone", "vgg16_backbone",
    "yolo_v8_xs_backbone",
}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.heavy if n in FAST else pytest.mark.slow)
            for n in names]


def test_importing_the_plugin_imports_neither_keras_nor_keras_cv():
    code = ("import sys, keras_tlft_keras_cv as p; assert len(p.SPECS) == 55; "
            "print(sorted(m for m in ('keras', 'keras_cv', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_keras_cv_the_hook_registers_nothing_and_fails_nothing(monkeypatch):
    monkeypatch.setattr(plugin, "is_available", lambda: False)
    registry = Registry()
    registry.collect("keras_cv", plugin.register_backbones)
    assert len(registry) == 0 and registry.failures == [] and registry.counts["keras_cv"] == 0


@needs_keras_cv
def test_with_keras_cv_every_spec_registers_under_its_own_bare_name():
    registry = Registry()
    registry.collect("keras_cv", plugin.register_backbones)
    assert registry.failures == [] and len(registry) == len(ARCHITECTURES) == 55
    assert registry.resolve("resnet50_v2_backbone").key == "keras_cv:resnet50_v2_backbone"


@needs_keras_cv
def test_every_image_backbone_keras_cv_exports_is_registered():
    import keras_cv
    from keras_cv.src.models.backbones.backbone_presets import backbone_presets

    descriptions = " ".join(arch.description for arch in ARCHITECTURES)
    aliases = [
        n for n in dir(keras_cv.models)
        if n.endswith("Backbone") and "_aliases" in getattr(keras_cv.models, n).__module__
        and "video_swin" not in getattr(keras_cv.models, n).__module__
    ]
    assert len(aliases) >= 48
    missing = [n for n in aliases if f"keras_cv.models.{n})" not in descriptions]
    assert missing == []
    image_presets = {p for p in backbone_presets if not p.startswith("videoswin")}
    covered = {a.preset for a in ARCHITECTURES} | {
        p for a in ARCHITECTURES for p in a.weights.values()
    }
    assert sorted(image_presets - covered) == []


def test_every_spec_passes_the_static_checks():
    for spec in plugin.SPECS:
        check_backbone_spec(spec, build=False)


@needs_keras_cv
@pytest.mark.parametrize("name", _params(sorted(SPECS)))
def test_offline_build_has_the_declared_params_and_blocks(name):
    import keras

    spec = SPECS[name]
    with keras.StatelessScope():
        model = spec.build(weights=None)
    assert model.count_params() == spec.params
    blocks = cut_into_blocks(model.layers, spec.blocks)
    assert [b.name for b in blocks] == [rule.name for rule in spec.blocks]
    assert blocks[-1].last == len(model.layers) - 1


def _published(arch) -> int:
    import keras_cv
    from keras_cv.src.models.backbones.backbone_presets import backbone_presets

    presets = {**backbone_presets, **keras_cv.models.MiTBackbone.presets}
    return presets[arch.preset]["metadata"]["params"]


@needs_keras_cv
def test_params_match_keras_cvs_preset_metadata():
    """Our figures (each checked against a build above) against keras-cv's published ones."""
    checked, wrong = 0, []
    for arch in ARCHITECTURES:
        if arch.published_as not in ("backbone", "classifier_10"):
            continue
        expected = arch.params
        if arch.published_as == "classifier_10":
            expected = arch.params + 10 * arch.config["embedding_dims"][-1] + 10
        checked += 1
        if _published(arch) != expected:
            wrong.append((arch.name, arch.published_as, _published(arch), expected))
    assert wrong == [] and checked == 36


def _round_filters(filters, width, divisor=8):
    """EfficientNet's channel rounding, as keras-cv's EfficientNet code applies it."""
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * filters else rounded


def _identity_expansion_params(model) -> int:
    """What keras-cv's earlier EfficientNet code built in addition: in each block without an
    expansion (ratio 1), a 1x1 Conv2D from the block's ``c`` input channels to its nominal width
    ``f`` and a BatchNormalization, and the depthwise conv, its BatchNorm and the projection
    widened from ``c`` to ``f`` (EfficientNetLite's stem stays at 32 channels while its first
    block is nominally ``round_filters(32 * width)`` wide)."""
    layers = {layer.name: layer for layer in model.layers}
    extra = 0
    for name, layer in layers.items():
        match = re.fullmatch(r"block(\d+)([a-z])_dwconv", name)
        if not match or f"{name[:-6]}expand_conv" in layers:
            continue
        k, _, c, _ = layer.kernel.shape
        stage = int(match[1]) - 1
        f = c if match[2] != "a" else _round_filters(
            model.stackwise_input_filters[stage], model.width_coefficient)
        project = layers.get(f"{name[:-6]}project") or layers[f"{name[:-6]}project_conv"]
        extra += c * f + 4 * f + (f - c) * (k * k + 4 + project.kernel.shape[-1])
    return extra


def _unrounded_se_params(model, ratio) -> int:
    """What keras-cv's earlier MobileNetV3 code built less: squeeze-and-excite bottlenecks of
    exactly ``filters * ratio`` channels instead of that rounded up to a multiple of 8."""
    from keras_cv.src.layers.regularization.squeeze_excite import SqueezeAndExcite2D

    fewer = 0
    for layer in model.layers:
        if isinstance(layer, SqueezeAndExcite2D):
            exact = layer.filters * ratio
            assert exact == int(exact)
            fewer += (2 * layer.filters + 1) * (layer.bottleneck_filters - int(exact))
    return fewer


def test_published_figures_cover_every_entry_that_has_one():
    counts = {}
    for arch in ARCHITECTURES:
        counts[arch.published_as] = counts.get(arch.published_as, 0) + 1
    assert counts == {"backbone": 30, "classifier_10": 6, "identity_expansion": 13,
                      "unrounded_se": 2, None: 4}


EARLIER_CODE = sorted(a.name for a in ARCHITECTURES
                      if a.published_as in ("identity_expansion", "unrounded_se"))


@needs_keras_cv
@pytest.mark.parametrize(
    "name", [n if n in FAST | {"efficientnetlite_b3_backbone", "mobilenet_v3_large_backbone"}
             else pytest.param(n, marks=pytest.mark.slow) for n in EARLIER_CODE])
def test_published_figure_that_describes_earlier_keras_cv_code_is_derived_exactly(name):
    """EfficientNetV1, EfficientNetLite and MobileNetV3: keras-cv 0.9 builds, from its own
    arguments, a different count than its metadata says; the difference is derived from the
    layers of our build, so the figure is explained to the parameter, not skipped."""
    import keras

    arch = BY_NAME[name]
    with keras.StatelessScope():
        model = SPECS[name].build(weights=None)
    assert model.count_params() == arch.params
    if arch.published_as == "identity_expansion":
        difference = _identity_expansion_params(model)
    else:
        ratios = {r for r in arch.config["stackwise_se_ratio"] if r}
        difference = -_unrounded_se_params(model, ratios.pop())
    assert difference != 0
    assert _published(arch) == arch.params + difference


@needs_keras_cv
@pytest.mark.parametrize(
    "name, shape",
    [
        ("resnet18_backbone", (64, 64, 3)),
        ("resnet18_v2_backbone", (64, 64, 3)),
        ("mobilenet_v3_small_backbone", (64, 64, 3)),
        ("csp_darknet_tiny_backbone", (64, 64, 3)),
        ("efficientnetv2_b0_backbone", (64, 64, 3)),
        ("yolo_v8_xs_backbone", (64, 64, 3)),
        ("vgg16_backbone", (64, 64, 3)),
        pytest.param("efficientnetlite_b0_backbone", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("efficientnetv1_b0_backbone", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("densenet121_backbone", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("mit_b0_backbone", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("vitdet_b_backbone", (224, 224, 3), marks=pytest.mark.slow),
    ],
)
def test_spec_conforms(name, shape):
    summary = check_backbone_spec(SPECS[name], input_shape=shape)
    assert len(summary["blocks"]) == len(SPECS[name].blocks)


@needs_keras_cv
def test_inspect_unfreezes_the_top_stack_of_resnet18():
    from keras_tlft.report import inspect_backbone

    report = inspect_backbone(SPECS["resnet18_backbone"], input_shape=(64, 64, 3), unfreeze=1)
    trainable = [b["name"] for b in report["blocks"] if b["trainable"]]
    assert trainable == ["stack_3"]
    assert 0 < report["trainable_params"] < report["total_params"]


@needs_keras_cv
def test_pretrained_weights_offline_raise_weights_download_error(monkeypatch):
    import keras_cv

    def offline(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='api.kaggle.com'): Max retries exceeded")

    monkeypatch.setattr(keras_cv.models.ResNetBackbone, "from_preset", offline)
    with pytest.raises(WeightsDownloadError) as info:
        load_backbone(SPECS["resnet50_backbone"], (64, 64, 3), "imagenet")
    message = str(info.value)
    assert "Could not download preset 'resnet50_imagenet' ('imagenet' weights of " \
           "keras_cv:resnet50_backbone) from Kaggle" in message
    assert "weights=None" in message


@needs_keras_cv
def test_weights_a_backbone_does_not_have_are_refused_before_building():
    with pytest.raises(ValueError, match=r"cannot load weights 'imagenet'.* Received: weights="):
        load_backbone(SPECS["resnet18_backbone"], (64, 64, 3), "imagenet")


@needs_keras_cv
def test_include_top_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="keras-cv backbones have no classifier top"):
        SPECS["resnet18_backbone"].build(input_shape=(64, 64, 3), include_top=True)


@needs_keras_cv
def test_unfreezing_all_of_csp_darknet_leaves_its_nested_batchnorm_frozen():
    """CSPDarkNet nests its BatchNorm layers inside composite layers: ``inspect --unfreeze all``
    trains everything but them, counted as Keras counts."""
    import math

    import keras

    from keras_tlft.report import inspect_backbone

    report = inspect_backbone(SPECS["csp_darknet_tiny_backbone"], input_shape=(64, 64, 3),
                              unfreeze="all")
    with keras.StatelessScope():
        model = SPECS["csp_darknet_tiny_backbone"].build(input_shape=(64, 64, 3), weights=None)
    bn = [layer for layer in model._flatten_layers() if
          isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) > 30 and not any(layer in model.layers for layer in bn)
    bn_params = sum(math.prod(v.shape) for layer in bn for v in layer.weights)
    assert report["total_params"] == model.count_params()
    assert report["trainable_params"] == model.count_params() - bn_params

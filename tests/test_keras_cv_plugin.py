"""The keras-cv backbone plugin (plugins/keras_cv): registration, offline builds, parameter
counts against keras-cv's own preset metadata, blocks, weights errors.

Building the large architectures is marked ``slow`` (run them with ``-m slow``); every entry is
built by some test. Builds that only count parameters and cut blocks run in a Keras
``StatelessScope``, which builds the real model without allocating its weights.
"""

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
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


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


@needs_keras_cv
def test_params_match_keras_cvs_preset_metadata():
    """Our figures (each checked against a build above) against keras-cv's published ones."""
    import keras_cv
    from keras_cv.src.models.backbones.backbone_presets import backbone_presets

    presets = {**backbone_presets, **keras_cv.models.MiTBackbone.presets}
    checked, wrong = 0, []
    for arch in ARCHITECTURES:
        if arch.published_as is None:
            continue
        published = presets[arch.preset]["metadata"]["params"]
        expected = arch.params + arch.published_delta  # "backbone": delta 0
        if arch.published_as == "classifier_10":
            expected = arch.params + 10 * arch.config["embedding_dims"][-1] + 10
        checked += 1
        if published != expected:
            wrong.append((arch.name, arch.published_as, published, expected))
    assert wrong == [] and checked == 51


def test_published_figures_cover_every_entry_that_has_one():
    counts = {}
    for arch in ARCHITECTURES:
        counts[arch.published_as] = counts.get(arch.published_as, 0) + 1
    assert counts == {"backbone": 30, "classifier_10": 6, "stale": 15, None: 4}


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

"""The keras-hub backbone plugin (plugins/keras_hub): registration, offline builds, parameter
counts against keras-hub's own preset metadata, blocks, weights errors.

Building the large architectures is marked ``slow`` (run them with ``-m slow``); every entry is
built by some test. Builds that only count parameters and cut blocks run in a Keras
``StatelessScope(initialize_variables=False)``, which builds the real model without allocating
its weights (so even DINOv3's 7B backbones build in about a second and under 1 GB).
"""

import importlib.util
import json
import math
import subprocess
import sys

import keras_tlft_keras_hub as plugin
import pytest
from keras_tlft_keras_hub.architectures import ARCHITECTURES

from keras_tlft.assembly import WeightsDownloadError, load_backbone
from keras_tlft.blocks import cut_into_blocks
from keras_tlft.registry import Registry
from keras_tlft.testing import check_backbone_spec

needs_keras_hub = pytest.mark.skipif(not plugin.is_available(), reason="keras-hub not installed")
BY_NAME = {arch.name: arch for arch in ARCHITECTURES}
SPECS = {spec.name: spec for spec in plugin.SPECS}
FAMILIES = ("CSPNet", "DeiT", "DenseNet", "EfficientNet", "HGNetV2", "MiT", "MobileNet",
            "ResNet", "SwinTransformer", "VGG", "ViT", "Xception")
SELF_SUPERVISED_FAMILIES = ("DINOV2", "DINOV3")
FAST = {
    "resnet_18_imagenet", "resnet_v2_50_imagenet", "resnet_vd_18_imagenet", "vgg_11_imagenet",
    "densenet_121_imagenet", "csp_resnet_50_ra_imagenet", "efficientnet_b0_ra_imagenet",
    "efficientnet_lite0_ra_imagenet", "hgnetv2_b4_ssld_stage2_ft_in1k",
    "mobilenet_v3_small_050_imagenet", "deit_tiny_distilled_patch16_224_imagenet",
    "xception_41_imagenet", "dinov2_small", "dinov3_vit_small_lvd1689m",
}
_BUILT = {}  # presets that share an architecture are built once


def _params(names):
    return [pytest.param(n, marks=pytest.mark.heavy if n in FAST else pytest.mark.slow)
            for n in names]


def _published(name) -> int:
    import keras_hub

    return keras_hub.models.Backbone.presets[name]["metadata"]["params"]


def _rounded_as(exact: int, published: int) -> int:
    """``exact`` rounded half up at the place of ``published``'s last nonzero digit, the
    precision of a rounded figure (21_600_000: hundreds of thousands)."""
    digits = str(published)
    place = 10 ** (len(digits) - len(digits.rstrip("0")))
    return (exact + place // 2) // place * place


def _presets(families) -> set:
    import keras_hub

    return {name for family in families
            for name in getattr(keras_hub.models, f"{family}Backbone").presets}


def test_importing_the_plugin_imports_neither_keras_nor_keras_hub():
    code = ("import sys, keras_tlft_keras_hub as p; assert len(p.SPECS) == 102; "
            "print(sorted(m for m in ('keras', 'keras_hub', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_keras_hub_the_hook_registers_nothing_and_fails_nothing(monkeypatch):
    monkeypatch.setattr(plugin, "is_available", lambda: False)
    registry = Registry()
    registry.collect("keras_hub", plugin.register_backbones)
    assert len(registry) == 0 and registry.failures == [] and registry.counts["keras_hub"] == 0


@needs_keras_hub
def test_with_keras_hub_every_spec_registers_under_its_preset_name():
    registry = Registry()
    registry.collect("keras_hub", plugin.register_backbones)
    assert registry.failures == [] and len(registry) == len(ARCHITECTURES) == 102
    assert registry.resolve("resnet_50_imagenet").key == "keras_hub:resnet_50_imagenet"


@needs_keras_hub
def test_every_preset_of_the_image_classification_families_is_registered():
    import keras_hub

    for family in FAMILIES:
        assert hasattr(keras_hub.models, f"{family}ImageClassifier")
    assert sorted(_presets(FAMILIES) - set(BY_NAME)) == []


@needs_keras_hub
def test_every_dinov2_and_dinov3_preset_is_registered():
    assert sorted(_presets(SELF_SUPERVISED_FAMILIES) - set(BY_NAME)) == []


@needs_keras_hub
def test_every_entry_is_a_preset_of_a_covered_family():
    assert sorted(set(BY_NAME) - _presets(FAMILIES + SELF_SUPERVISED_FAMILIES)) == []


def test_every_spec_passes_the_static_checks():
    for spec in plugin.SPECS:
        check_backbone_spec(spec, build=False)


@needs_keras_hub
def test_params_match_keras_hubs_backbone_figures():
    """The figures that count the backbone alone, exactly or rounded, for every such preset (the
    others need a build, below)."""
    wrong = []
    for arch in ARCHITECTURES:
        published = _published(arch.name)
        if arch.published_as == "rounded":
            ours = _rounded_as(arch.params, published)
        elif arch.published_as == "backbone":
            ours = arch.params
        elif arch.published_as == "copied":
            ours = BY_NAME[arch.published_from].params
            assert ours != arch.params and BY_NAME[arch.published_from].published_as == "backbone"
        else:
            continue
        if ours != published:
            wrong.append((arch.name, published, arch.params))
    assert wrong == []


def _stats(spec):
    """count_params, non-trainable count, output channels and blocks of an offline build."""
    import keras

    arch = BY_NAME[spec.name]
    key = json.dumps([arch.constructor, arch.config, arch.default_input_shape, arch.output],
                     sort_keys=True, default=list)
    if key not in _BUILT:
        # Counted inside the scope: leaving it would allocate every weight. clear_session()
        # then forgets the variables that were never initialized.
        with keras.StatelessScope(initialize_variables=False):
            model = spec.build(weights=None)
            frozen = sum(math.prod(v.shape) for v in model.non_trainable_weights)
            blocks = cut_into_blocks(model.layers, spec.blocks)
            _BUILT[key] = (model.count_params(), frozen, model.output_shape[-1], blocks,
                           len(model.layers))
        keras.backend.clear_session()
    return _BUILT[key]


@needs_keras_hub
@pytest.mark.parametrize("name", _params(sorted(SPECS)))
def test_offline_build_has_the_declared_params_blocks_and_published_figure(name):
    spec, arch = SPECS[name], BY_NAME[name]
    total, frozen, channels, blocks, n_layers = _stats(spec)
    assert total == spec.params
    assert [b.name for b in blocks] == [rule.name for rule in spec.blocks]
    assert blocks[-1].last == n_layers - 1
    head = {"classifier": channels * 1000 + 1000, "classifier_trainable": channels * 1000 + 1000,
            "classifier_10": channels * 10 + 10}.get(arch.published_as, 0)
    counted = total - frozen if arch.published_as == "classifier_trainable" else total
    if arch.published_as == "rounded":
        assert _rounded_as(total, _published(name)) == _published(name)
    elif arch.published_as == "copied":
        assert _published(name) == _published(arch.published_from) != total
    else:
        assert _published(name) == counted + head


def test_published_figures_cover_every_entry():
    counts = {}
    for arch in ARCHITECTURES:
        counts[arch.published_as] = counts.get(arch.published_as, 0) + 1
    assert counts == {"backbone": 50, "classifier_trainable": 20, "classifier_10": 12,
                      "classifier": 10, "copied": 2, "rounded": 8}


@needs_keras_hub
@pytest.mark.parametrize(
    "name, shape",
    [
        ("resnet_18_imagenet", (64, 64, 3)),
        ("mobilenet_v3_small_050_imagenet", (64, 64, 3)),
        ("vgg_11_imagenet", (64, 64, 3)),
        ("deit_tiny_distilled_patch16_224_imagenet", None),
        ("dinov2_small", (56, 56, 3)),
        ("dinov3_vit_small_lvd1689m", (64, 64, 3)),
        pytest.param("dinov2_with_registers_small", (14, 14, 3), marks=pytest.mark.slow),
        pytest.param("hgnetv2_b4_ssld_stage2_ft_in1k", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("swin_tiny_patch4_window7_224", None, marks=pytest.mark.slow),
        pytest.param("efficientnet_b0_ra_imagenet", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("mit_b0_ade20k_512", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("csp_darknet_53_ra_imagenet", (64, 64, 3), marks=pytest.mark.slow),
        pytest.param("xception_41_imagenet", (96, 96, 3), marks=pytest.mark.slow),
    ],
)
def test_spec_conforms(name, shape):
    summary = check_backbone_spec(SPECS[name], input_shape=shape)
    assert len(summary["blocks"]) == len(SPECS[name].blocks)
    assert len(summary["output_shape"]) == 4


@needs_keras_hub
def test_inspect_unfreezes_the_top_stack_of_resnet_18():
    from keras_tlft.report import inspect_backbone

    report = inspect_backbone(SPECS["resnet_18_imagenet"], input_shape=(64, 64, 3), unfreeze=1)
    assert [b["name"] for b in report["blocks"] if b["trainable"]] == ["stack_3"]


@needs_keras_hub
def test_build_model_puts_a_gap_head_on_a_vit_token_backbone():
    from keras_tlft import build_model

    model = build_model(SPECS["deit_tiny_distilled_patch16_224_imagenet"], num_classes=3,
                        weights=None)
    assert model.output_shape == (None, 3)


@needs_keras_hub
def test_build_model_puts_a_gap_head_on_dinov2_below_its_518_pixels():
    """The position embeddings are interpolated to the input, so 112x112 (8x8 patches) works."""
    from keras_tlft import build_model

    model = build_model(SPECS["dinov2_small"], num_classes=3, weights=None,
                        input_shape=(112, 112, 3))
    assert model.output_shape == (None, 3)
    assert model.get_layer("backbone").output_shape == (None, 1, 1 + 8 * 8, 384)


@needs_keras_hub
def test_pretrained_weights_offline_raise_weights_download_error(monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='api.kaggle.com'): Max retries exceeded")

    monkeypatch.setattr(keras_hub.models.ResNetBackbone, "from_preset", offline)
    with pytest.raises(WeightsDownloadError) as info:
        load_backbone(SPECS["resnet_18_imagenet"], (64, 64, 3), "imagenet")
    assert "Could not download preset 'resnet_18_imagenet' ('imagenet' weights of " \
           "keras_hub:resnet_18_imagenet) from Kaggle" in str(info.value)


@needs_keras_hub
def test_dinov2_default_weights_are_its_lvd142m_preset(monkeypatch):
    import keras_hub

    asked = []

    def offline(preset, **kwargs):
        asked.append((preset, kwargs))
        raise ConnectionError("HTTPSConnectionPool(host='api.kaggle.com'): Max retries exceeded")

    monkeypatch.setattr(keras_hub.models.DINOV2Backbone, "from_preset", offline)
    with pytest.raises(WeightsDownloadError, match="'lvd142m' weights of keras_hub:dinov2_small"):
        load_backbone(SPECS["dinov2_small"], (224, 224, 3), "default")
    assert asked == [("dinov2_small", {"image_shape": (224, 224, 3)})]


@needs_keras_hub
def test_a_preset_without_imagenet_weights_names_its_own():
    with pytest.raises(ValueError, match=r"expected None, a weights file, or one of \['ade20k'\]"):
        load_backbone(SPECS["mit_b0_ade20k_512"], (64, 64, 3), "imagenet")


@needs_keras_hub
@pytest.mark.skipif(importlib.util.find_spec("keras_cv") is None, reason="keras-cv not installed")
def test_list_shows_the_three_first_party_sources_together():
    """The installed entry points (pyproject.toml's ``keras_tlft`` group), through the CLI."""
    proc = subprocess.run([sys.executable, "-m", "keras_tlft", "plugins", "--json"],
                          capture_output=True, text=True, timeout=120)
    plugins = {p["name"]: p["backbones"] for p in json.loads(proc.stdout)["plugins"]}
    assert plugins.get("keras_cv") == 55 and plugins.get("keras_hub") == 102, (
        "the keras_cv/keras_hub entry points are not installed: pyproject.toml's "
        f"[project.entry-points.keras_tlft] must name them (then reinstall). Received: {plugins}"
    )
    proc = subprocess.run([sys.executable, "-m", "keras_tlft", "list", "--json"],
                          capture_output=True, text=True, timeout=120)
    sources = {row["source"] for row in json.loads(proc.stdout)}
    assert {"applications", "keras_cv", "keras_hub"} <= sources

"""keras-hub's ViTs (DINOv2, DINOv3, ViT), one block per transformer layer
(``keras_tlft_keras_hub.transformer_layers``): the blocks, the output and weights left as
keras-hub makes them, ``inspect``, gradual unfreezing one transformer layer at a time,
layer-wise learning-rate decay at each layer's rate, and ``.keras`` save/load (DINO).

Tiny ones (2 transformer layers of width 32) built offline with random weights; the registered
real sizes' parameter counts and blocks are checked by ``tests/test_keras_hub_plugin.py``, and
the last test here (``heavy``) reloads a real-size DINOv2 and recognises it by structure.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import keras_tlft_keras_hub as plugin
import numpy as np
import pytest
from keras_tlft_keras_hub.architectures import ARCHITECTURES
from keras_tlft_keras_hub.transformer_layers import layers_as_model_layers, transformer_blocks

sys.path.insert(0, str(Path(__file__).parent))

from test_optim_canary import OPTIMIZERS, GradientRecorder, _keras_step  # noqa: E402

pytestmark = pytest.mark.skipif(not plugin.is_available(), reason="keras-hub not installed")

BY_NAME = {arch.name: arch for arch in ARCHITECTURES}
TINY = {"num_layers": 2, "hidden_dim": 32, "num_heads": 2}


def _tiny(preset, shape, **config):
    """The architecture of ``preset`` at 2 layers of width 32, named ``<family>_tiny``."""
    arch = BY_NAME[preset]
    return dataclasses.replace(
        arch, name=f"{arch.family}_tiny", config={**arch.config, **TINY, **config},
        blocks=transformer_blocks(arch.constructor, TINY["num_layers"]), params=None,
        default_input_shape=shape, min_input_size=shape[0],
    )


TINY_ARCHS = {
    "dinov2": _tiny("dinov2_small", (28, 28, 3), intermediate_dim=64,
                    position_embedding_shape=(56, 56)),
    "dinov3": _tiny("dinov3_vit_small_lvd1689m", (32, 32, 3), intermediate_dim=64),
    "vit": _tiny("vit_base_patch16_224_imagenet", (32, 32, 3), mlp_dim=64),
}
FAMILIES = sorted(TINY_ARCHS)
DINOS = ["dinov2", "dinov3"]
# Training tests: the DINOs in the default run, ViT (the same code path) with -m heavy
TRAINED = [pytest.param(f, marks=() if f in DINOS else pytest.mark.heavy) for f in FAMILIES]


@dataclasses.dataclass(frozen=True)
class Names:
    """The block names and the names of the layers they hold, in a tiny backbone."""

    blocks: tuple
    embeddings: str
    transformer_layers: tuple
    final_norm: str


NAMES = {
    **{f: Names(("embedding", "layer_0", "layer_1", "final_norm"), "embeddings",
                ("layers_0", "layers_1"), "layernorm") for f in DINOS},
    "vit": Names(("embedding", "block_1", "block_2", "final_norm"), "vit_patching_and_embedding",
                 ("transformer_block_1", "transformer_block_2"), "ln"),
}


def _spec(family):
    return plugin.make_spec(TINY_ARCHS[family])


def _keras_hub_backbone(family, **kwargs):
    """keras-hub's own backbone of the tiny architecture, as keras-hub builds it."""
    import keras_hub

    arch = TINY_ARCHS[family]
    config = {**arch.config, "image_shape": arch.default_input_shape, **kwargs}
    return getattr(keras_hub.models, arch.constructor)(**config)


def _images(family, n=4):
    shape = TINY_ARCHS[family].default_input_shape
    return np.random.default_rng(0).uniform(0, 255, size=(n, *shape)).astype("float32")


def _values(layer) -> dict:
    import keras

    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in layer.weights}


def _snapshot(backbone) -> dict:
    return {layer.name: _values(layer) for layer in backbone.layers if layer.weights}


def _moved(before: dict, after: dict) -> set:
    """Names of the layers whose weights differ between two snapshots."""
    return {name for name, values in before.items()
            if any(not np.array_equal(v, after[name][p]) for p, v in values.items())}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_transformer_layer_is_a_block_between_embedding_and_final_norm(family):
    from keras_tlft.blocks import cut_into_blocks

    model = _spec(family).build(input_shape=TINY_ARCHS[family].default_input_shape,
                                weights=None, include_top=False)
    names = NAMES[family]
    blocks = cut_into_blocks(model.layers, _spec(family).blocks)
    members = [[model.layers[i].name for i in b.indices()] for b in blocks]
    assert [b.name for b in blocks] == list(names.blocks)
    assert names.embeddings in members[0]
    assert members[1:3] == [[layer] for layer in names.transformer_layers]
    assert members[3] == [names.final_norm, "tokens_as_map"]


@pytest.mark.parametrize("family", FAMILIES)
def test_output_and_weights_are_keras_hubs_own(family):
    """The rebuilt model shares keras-hub's layers: same variables, same output, bit for bit."""
    import keras

    hub = _keras_hub_backbone(family)
    expected = keras.ops.convert_to_numpy(hub(_images(family)))
    ours = plugin.adapt_output(hub, TINY_ARCHS[family], TINY_ARCHS[family].default_input_shape)
    assert {id(v) for v in ours.weights} == {id(v) for v in hub.weights}
    assert ours.count_params() == hub.count_params()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(_images(family)))[:, 0],
                                  expected)


@pytest.mark.parametrize("family", DINOS)
def test_blocks_fit_a_dino_named_as_a_preset_names_it(family):
    """keras-hub prefixes the layer names with the backbone's name when it has one (a preset's
    config names it), and the rules allow for it."""
    from keras_tlft.blocks import cut_into_blocks

    hub = _keras_hub_backbone(family, name=f"{family}_backbone")
    model = layers_as_model_layers(hub)
    blocks = cut_into_blocks(model.layers, _spec(family).blocks)
    members = {b.name: [model.layers[i].name for i in b.indices()] for b in blocks}
    assert list(members) == list(NAMES[family].blocks)
    assert members["layer_1"] == ["layers_1"]
    assert members["final_norm"] == [f"{family}_backbone_layernorm"]


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_unfreezes_the_top_transformer_layer_and_the_final_norm(family):
    from keras_tlft.blocks import count_weights
    from keras_tlft.report import inspect_backbone

    names = NAMES[family]
    report = inspect_backbone(_spec(family), unfreeze=2)
    assert [b["name"] for b in report["blocks"]] == list(names.blocks)
    assert [b["name"] for b in report["blocks"] if b["trainable"]] == list(names.blocks[2:])
    model = _spec(family).build(input_shape=TINY_ARCHS[family].default_input_shape,
                                weights=None, include_top=False)
    top = [model.get_layer(name) for name in (names.transformer_layers[1], names.final_norm)]
    assert report["trainable_params"] == count_weights(v for layer in top for v in layer.weights)


@pytest.mark.parametrize("family", TRAINED)
def test_gradual_unfreezing_trains_one_more_transformer_layer_each_epoch(family):
    import keras

    from keras_tlft import ProgressiveUnfreeze, build_model

    keras.utils.set_random_seed(0)
    model = build_model(_spec(family), num_classes=2, weights=None)
    backbone = model.get_layer("backbone")
    snapshots = [_snapshot(backbone)]
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(_snapshot(backbone)))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    images, labels = _images(family, 8), np.array([0, 1] * 4)
    model.fit(images, labels, batch_size=4, epochs=3, verbose=0,
              callbacks=[ProgressiveUnfreeze("gradual"), record])
    moved = [_moved(before, after) for before, after in zip(snapshots, snapshots[1:])]
    norm, top = NAMES[family].final_norm, NAMES[family].transformer_layers[1]
    assert moved == [set(), {norm}, {norm, top}]


@pytest.mark.parametrize("family", TRAINED)
def test_layer_decay_steps_each_transformer_layer_at_its_own_rate(family):
    """``block_lr_decay=0.75``: the final norm at the head's rate, each block below it at 0.75
    times the one above (timm's and BEiT's layer decay): one step of each block, with SGD and
    with Adam, is the step a plain optimizer takes at that rate from the same values with the
    same gradient (the pattern of tests/test_optim_canary.py)."""
    import keras

    from keras_tlft import ProgressiveUnfreeze, build_model

    head_lr, decay = 0.01, 0.75
    keras.utils.set_random_seed(0)
    model = build_model(_spec(family), num_classes=2, weights=None)
    backbone = model.get_layer("backbone")
    start = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    images, labels = _images(family, 4), np.array([0, 1, 0, 1])

    backbone.trainable = True  # the gradient of every variable at this first step
    recorder = GradientRecorder(learning_rate=1.0)
    model.compile(recorder, "sparse_categorical_crossentropy", jit_compile=False)
    model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    gradients = {v.path: keras.ops.convert_to_numpy(g)
                 for v, g in zip(model.trainable_variables, recorder.seen)}

    names = NAMES[family]
    bottom_up = [names.embeddings, *names.transformer_layers, names.final_norm]
    rates = {name: head_lr * decay ** (len(bottom_up) - 1 - b) for b, name in enumerate(bottom_up)}
    for optimizer in ("SGD", "Adam"):
        for v in model.weights:
            v.assign(start[v.path])
        backbone.trainable = False
        model.compile(OPTIMIZERS[optimizer](keras.optimizers, head_lr),
                      "sparse_categorical_crossentropy", jit_compile=False)
        model.fit(images, labels, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[
            ProgressiveUnfreeze({0: "all"}, backbone_lr_ratio=1.0, block_lr_decay=decay)])
        for name, lr in rates.items():
            moved = {v.path: v for v in backbone.get_layer(name).trainable_weights
                     if np.any(gradients[v.path])}
            assert moved, name
            origin = {path: start[path] for path in moved}
            steps = {path: keras.ops.convert_to_numpy(v) - origin[path]
                     for path, v in moved.items()}
            expected = _keras_step(optimizer, lr, origin, gradients)
            for path, step in steps.items():  # atol: float32 rounding of weights near 1
                np.testing.assert_allclose(step, expected[path], rtol=1e-4, atol=1e-7,
                                           err_msg=f"{optimizer}: {path} at learning rate {lr}")
            above = _keras_step(optimizer, lr / decay, origin, gradients)  # a block higher
            assert any(not np.allclose(above[p], steps[p], rtol=1e-2) for p in steps), name


@pytest.mark.parametrize("family", DINOS)
def test_a_saved_dino_reloads_with_the_same_output_and_blocks(family, tmp_path):
    import keras

    from keras_tlft import build_model
    from keras_tlft.discovery import locate_backbone

    model = build_model(_spec(family), num_classes=2, weights=None)
    path = tmp_path / "dino.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    images = _images(family)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(images)),
                                  keras.ops.convert_to_numpy(model(images)))
    ours = locate_backbone(model)
    found = locate_backbone(reloaded)
    assert ours.blocks_source == "build_model" and found.blocks_source == "derived"
    assert [(b.first, b.last) for b in found.blocks] == [(b.first, b.last) for b in ours.blocks]


@pytest.mark.heavy
def test_a_reloaded_dinov2_small_is_recognised_by_structure(tmp_path):
    """A real-size DINOv2 saved and reloaded (no spec attached) gets its 14 blocks back from the
    registered rules, by structure, at another input size than the registered one."""
    import keras

    from keras_tlft import build_model
    from keras_tlft.discovery import locate_backbone

    model = build_model("keras_hub:dinov2_small", num_classes=2, weights=None,
                        input_shape=(56, 56, 3))
    model.save(tmp_path / "dinov2.keras")
    found = locate_backbone(keras.models.load_model(tmp_path / "dinov2.keras"))
    assert found.blocks_source == "structure"
    # dinov2_small's rules are those of every 12-layer DINOv2 (base too): same blocks
    assert found.blocks_spec.family == "dinov2"
    assert [b.name for b in found.blocks] == (
        ["embedding", *(f"layer_{i}" for i in range(12)), "final_norm"])

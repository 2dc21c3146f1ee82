"""EfficientNet-Lite0's ImageNet weights on real photos: top-5 classes, offline.

The photos are scikit-image's sample data (shipped inside its wheel), centre-cropped square and
resized to 224x224; the model is ``build_model``'s preprocessing (``(x - 127) / 128``) and the
``efficientnet_lite0`` backbone with its ImageNet classifier (``include_top=True``, logits,
softmax applied here). Class names come from keras-hub's offline ImageNet table
(``keras_hub.utils.imagenet_id_to_name``) when keras-hub is installed; otherwise indices only.

Usage:
    python benchmarks/imagenet_photos.py

Prints a Markdown table and writes benchmarks/results/imagenet_photos.json.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

import keras_tlft as tlft  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "coins", "camera")
SIZE = 224


def load_photo(name: str) -> np.ndarray:
    """One scikit-image sample photo as 224x224 RGB 0-255 (gray ones copied to 3 channels)."""
    import skimage.data
    import skimage.transform

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    h, w = image.shape[:2]
    s = min(h, w)
    square = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return skimage.transform.resize(square, (SIZE, SIZE), order=1, anti_aliasing=True,
                                    preserve_range=True).astype("float32")


def class_name(index: int) -> str | None:
    if importlib.util.find_spec("keras_hub") is None:
        return None
    import keras_hub

    return keras_hub.utils.imagenet_id_to_name(index)


def main() -> int:
    spec = tlft.get_backbone("efficientnet_lite0")
    images = np.stack([load_photo(name) for name in PHOTOS])
    backbone = spec.build((SIZE, SIZE, 3), "imagenet", include_top=True)
    logits = keras.ops.convert_to_numpy(backbone(spec.preprocessing()(images), training=False))
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    rows = []
    print("| photo (`skimage.data`) | top-5 ImageNet classes (index name probability) |")
    print("|---|---|")
    for name, p in zip(PHOTOS, probs):
        top = [int(i) for i in np.argsort(-p)[:5]]
        classes = [{"index": i, "name": class_name(i), "probability": float(p[i])} for i in top]
        rows.append({"photo": name, "top5": classes})
        cells = ", ".join(
            " ".join(str(v) for v in (c["index"], c["name"], f"{c['probability']:.3f}") if v)
            for c in classes
        )
        print(f"| `{name}` | {cells} |")
    write_json("imagenet_photos.json", {
        "benchmark": "imagenet_photos", "environment": environment(),
        "settings": {"backbone": spec.key, "weights": "imagenet", "size": SIZE,
                     "names": "keras_hub.utils.imagenet_id_to_name"
                     if importlib.util.find_spec("keras_hub") else None},
        "results": rows,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

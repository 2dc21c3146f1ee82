"""FeatureDrift: how far fine-tuning moves a backbone's features from the pretrained ones.

Fine-tuning with few labels can destroy pretrained features (the motivation of LP-FT, Kumar et
al. 2022). This callback keeps the features every backbone block gives on a fixed probe batch at
the start of training, and each epoch measures how similar the current ones still are: the mean
cosine similarity of each probe sample's features, and linear CKA (Kornblith et al. 2019), which
ignores rotations and isotropic scaling of the feature space. It writes them into ``logs`` and can
warn, or roll the backbone back to where the stage began, when a block drifts too far.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np

__all__ = ["FeatureDrift", "cosine_similarity", "linear_cka"]

MEASURES = ("cos", "cka")
ACTIONS = ("warn", "rollback")
# What each epoch's logs gain by default (the per-block values are in FeatureDrift.history).
SUMMARY_KEYS = ("drift_cos_min", "drift_cka_min", "drift_rollback")


def cosine_similarity(reference: np.ndarray, current: np.ndarray) -> float:
    """The mean over samples (rows) of the cosine similarity of their flattened features: 1.0
    exactly for identical features. A sample whose features are all zero in both counts as 1,
    in one of them as 0."""
    a = _rows(reference)
    b = _rows(current)
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    both_zero = norms == 0
    cos = np.where(both_zero, 0.0, dot / np.where(both_zero, 1.0, norms))
    cos = np.where(both_zero & ~a.any(axis=1) & ~b.any(axis=1), 1.0, cos)
    return float(np.clip(cos, -1.0, 1.0).mean())


def linear_cka(reference: np.ndarray, current: np.ndarray) -> float:
    """Linear CKA of two feature matrices (samples in rows), through their centred Gram
    matrices: ``<K, L> / sqrt(<K, K> <L, L>)``, 1.0 for identical features; 0.0 when one of
    them does not vary across the samples (collapsed features), 1.0 when neither does."""
    return _cka(centered_gram(reference), centered_gram(current))


def centered_gram(features: np.ndarray) -> np.ndarray:
    """The doubly centred Gram matrix ``H X X^T H`` of the rows of ``features`` (float64)."""
    x = _rows(features)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def _cka(k: np.ndarray, lam: np.ndarray) -> float:
    kk, ll = float(np.sum(k * k)), float(np.sum(lam * lam))
    if kk == 0 or ll == 0:
        # Features that do not vary across the samples carry no structure: the same as the
        # other's only when neither varies.
        return 1.0 if kk == ll else 0.0
    denominator = math.sqrt(kk * ll)
    return float(np.clip(np.sum(k * lam) / denominator, -1.0, 1.0))


def _rows(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    return x.reshape(len(x), -1)


class FeatureDrift(keras.callbacks.Callback):
    """Measure, each epoch, how far each backbone block's features moved from the pretrained ones.

    On a fixed probe batch (model inputs, e.g. 32 to 256 training images), the output of every
    block of the backbone (the blocks `ProgressiveUnfreeze` uses: from the registry, or derived
    from the layer names) is recorded at the start of `fit`. At the end of each epoch the features
    are computed again (inference mode) and compared: `drift_cos_<block>` (the mean cosine
    similarity over the probe samples: 1.0 exactly while the block and everything below it are
    unchanged), `drift_cka_<block>` (linear CKA, with `cka=True`) and `drift_cos_min` /
    `drift_cka_min` (the lowest over the blocks). Every value is kept in the callback's
    `history` (a dict of per-epoch lists, as `History.history`). Each epoch's `logs` gain only
    the two summaries, so Keras's progress bar stays readable; `log_blocks=True` puts the
    per-block values in `logs` too, for `CSVLogger` and `TensorBoard` (list this callback before
    them).

    With `min_similarity`, a block whose similarity (the `measure`) falls below it is reported:
    `on_drift="warn"` issues a warning; `on_drift="rollback"` also puts the backbone's weights
    back to what they were when the current stage began (a stage: epochs over which the set of
    trainable backbone weights stays the same, as `ProgressiveUnfreeze` sets it; this works in
    any callback order) and logs `drift_rollback` = 1 for that epoch (0 otherwise). The head is
    not rolled back. The similarities logged are the ones measured before the rollback.

    Args:
        probe: a fixed batch of model inputs (an array, or the structure the model takes).
        backbone: the backbone, as for `ProgressiveUnfreeze`: `None` finds it, or a layer name
            or object.
        blocks: `None` (from the registry, or derived), a registered backbone name or a list of
            `BlockRule`, as for `ProgressiveUnfreeze`.
        cka: also compute linear CKA. Defaults to True (its cost is one probe-sized Gram matrix
            per block).
        min_similarity: the threshold in [0, 1], or `None` (only measure). Defaults to None.
        measure: `"cos"` or `"cka"`: which similarity `min_similarity` applies to.
        on_drift: `"warn"` or `"rollback"`. Defaults to `"warn"`.
        verbose: 1 prints the lowest similarities each epoch.
        log_blocks: also put every block's similarities in `logs`. Defaults to False (only
            `drift_cos_min`, `drift_cka_min` and `drift_rollback` are logged; `history` has
            them all).

    Example:

    ```python
    probe = x_train[:64]
    drift = keras_tlft.FeatureDrift(probe, min_similarity=0.8, on_drift="rollback")
    model.fit(x_train, y_train, epochs=12, callbacks=[
        keras_tlft.ProgressiveUnfreeze("gradual:every=2"),
        drift,
        keras.callbacks.CSVLogger("log.csv"),
    ])
    model.history.history["drift_cos_min"]  # the lowest block's: in logs and the CSV file
    drift.history["drift_cos_block5"]  # every block's
    ```
    """

    def __init__(self, probe, backbone=None, blocks=None, cka=True, min_similarity=None,
                 measure="cos", on_drift="warn", verbose=0, log_blocks=False):
        super().__init__()
        if probe is None or not keras.tree.flatten(probe):
            raise ValueError("probe must be a batch of model inputs (e.g. x_train[:64]). "
                             f"Received: probe={probe!r}")
        self.probe = probe
        n = len(keras.tree.flatten(probe)[0])
        if n < 1:
            raise ValueError("probe must hold at least one sample (CKA needs two). "
                             f"Received: a probe of {n} samples")
        if backbone is not None and not isinstance(backbone, (str, keras.layers.Layer)):
            raise ValueError("backbone must be None, a layer name or a Keras layer. "
                             f"Received: backbone={backbone!r}")
        from keras_tlft.model.discovery import blocks_argument

        self.backbone = backbone
        self.blocks = blocks_argument(blocks)
        if not isinstance(cka, bool):
            raise ValueError(f"cka must be True or False. Received: cka={cka!r}")
        self.cka = cka
        if min_similarity is not None and not (
            isinstance(min_similarity, (int, float)) and not isinstance(min_similarity, bool)
            and 0 <= min_similarity <= 1
        ):
            raise ValueError("min_similarity must be None or a number in [0, 1], the lowest "
                             f"similarity a block may keep. Received: min_similarity="
                             f"{min_similarity!r}")
        self.min_similarity = min_similarity
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}. Received: measure={measure!r}")
        if measure == "cka" and not cka:
            raise ValueError("measure='cka' needs cka=True. Received: cka=False, measure='cka'")
        self.measure = measure
        if on_drift not in ACTIONS:
            raise ValueError(f"on_drift must be one of {ACTIONS}. "
                             f"Received: on_drift={on_drift!r}")
        self.on_drift = on_drift
        if isinstance(verbose, bool) or verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1. Received: verbose={verbose!r}")
        self.verbose = verbose
        if not isinstance(log_blocks, bool):
            raise ValueError(f"log_blocks must be True or False. Received: "
                             f"log_blocks={log_blocks!r}")
        self.log_blocks = log_blocks
        self.history: dict[str, list] = {}

    # ------------------------------------------------------------------ set-up

    def on_train_begin(self, logs=None):
        from keras_tlft.model.discovery import locate_backbone

        model = self.model
        bb = locate_backbone(model, self.backbone, self.blocks)
        self.block_names = [b.name for b in bb.blocks]
        self._container, self._layers = bb.container, bb.layers
        self._extractor = block_extractor(model, bb.layers, bb.blocks, bb.container)
        reference = self._features()
        self._reference = reference
        self._reference_grams = [centered_gram(f) for f in reference] if self.cka else None
        self._stage_key = None
        self._stage_start = None
        self._epoch_start = None
        self.history = {}

    def _features(self) -> list[np.ndarray]:
        outputs = self._extractor.predict_on_batch(self.probe)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.asarray(keras.ops.convert_to_numpy(o)) for o in outputs]

    def _backbone_variables(self) -> list:
        roots = [self._container] if self._container is not None else self._layers
        seen: set[int] = set()
        return [v for root in roots for v in root.weights if not (id(v) in seen or seen.add(id(v)))]

    def _trainable_key(self) -> frozenset:
        roots = [self._container] if self._container is not None else self._layers
        return frozenset(id(v) for root in roots for v in root.trainable_weights)

    # ------------------------------------------------------------------ each epoch

    def on_epoch_begin(self, epoch, logs=None):
        if self.on_drift == "rollback":
            self._epoch_start = [np.array(keras.ops.convert_to_numpy(v))
                                 for v in self._backbone_variables()]

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        # The flags in force during this epoch: a stage began at this epoch when they differ
        # from the last epoch's (whichever callback changed them, and in whatever order).
        key = self._trainable_key()
        if key != self._stage_key:
            self._stage_key, self._stage_start = key, self._epoch_start
        current = self._features()
        values = self._similarities(current)
        drifted = self._drifted(values)
        if self.on_drift == "rollback":
            values["drift_rollback"] = self._react(epoch, drifted) if drifted else 0
        elif drifted:
            self._react(epoch, drifted)
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        # Only the summaries reach Keras's progress bar, unless asked: a line per epoch.
        logs.update(values if self.log_blocks else
                    {k: v for k, v in values.items() if k in SUMMARY_KEYS})
        if self.verbose:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k.endswith("_min"))
            print(f"Epoch {epoch + 1}: FeatureDrift {shown}")

    def _similarities(self, current) -> dict:
        values = {}
        for name, ref, cur in zip(self.block_names, self._reference, current):
            values[f"drift_cos_{name}"] = cosine_similarity(ref, cur)
        if self.cka:
            for name, gram, cur in zip(self.block_names, self._reference_grams, current):
                values[f"drift_cka_{name}"] = _cka(gram, centered_gram(cur))
        for measure in MEASURES if self.cka else MEASURES[:1]:
            values[f"drift_{measure}_min"] = min(
                v for k, v in values.items() if k.startswith(f"drift_{measure}_"))
        return values

    def _drifted(self, values: dict) -> dict:
        if self.min_similarity is None:
            return {}
        return {name: values[f"drift_{self.measure}_{name}"] for name in self.block_names
                if values[f"drift_{self.measure}_{name}"] < self.min_similarity}

    def _react(self, epoch: int, drifted: dict) -> int:
        rows = ", ".join(f"{name} {value:.4f}" for name, value in drifted.items())
        what = f"FeatureDrift: epoch {epoch + 1}: {self.measure} similarity to the pretrained " \
               f"features fell below {self.min_similarity} in {rows}"
        if self.on_drift == "rollback" and self._stage_start is not None:
            for v, value in zip(self._backbone_variables(), self._stage_start):
                v.assign(value)
            warnings.warn(f"{what}; the backbone's weights were rolled back to the start of "
                          f"this stage.", stacklevel=2)
            return 1
        warnings.warn(f"{what}.", stacklevel=2)
        return 0

    def on_train_end(self, logs=None):
        self._epoch_start = self._stage_start = None

    def get_config(self) -> dict:
        """The callback's configuration as plain JSON-able values (the probe left out)."""
        from keras_tlft.model.discovery import locator_config

        return {**locator_config(self.backbone, self.blocks), "cka": self.cka,
                "min_similarity": self.min_similarity, "measure": self.measure,
                "on_drift": self.on_drift, "verbose": self.verbose,
                "log_blocks": self.log_blocks}


def block_extractor(model, layers, blocks, container=None):
    """A model from ``model``'s inputs to the output of every block's last layer (sharing the
    layers and weights): what runs before the backbone (preprocessing, resizing) included.

    For a nested backbone (``container``), the outer graph is re-traced with the same layers
    (``keras.models.clone_model`` reusing them) to find the tensor the backbone is called on.
    """
    outputs = [_first(layers[b.last].output) for b in blocks]
    if container is None:
        return keras.Model(model.input, outputs, name=f"{model.name}_block_features")
    inner = keras.Model(container.inputs, outputs, name=f"{container.name}_block_features")
    if isinstance(model, keras.Sequential):
        x = inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
        for layer in model.layers:
            if layer is container:
                return keras.Model(inputs, inner(x), name=f"{model.name}_block_features")
            x = layer(x)
    found = []

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer is container:
            found.append(inner(args[0] if args else next(iter(kwargs.values()))))
        return out

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                     call_function=call)
    if len(found) != 1:
        raise ValueError(
            f"FeatureDrift needs the backbone {container.name!r} called exactly once between the "
            f"model's inputs and outputs; it is called {len(found)} times. "
            f"Received: backbone={container.name!r}"
        )
    return keras.Model(clone.input, found[0], name=f"{model.name}_block_features")


def _first(tensor):
    return tensor[0] if isinstance(tensor, (list, tuple)) else tensor

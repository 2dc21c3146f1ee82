"""BatchNorm policies: how the BatchNormalization layers of unfrozen blocks train.

One name, ``bn``, taken alike by :class:`~keras_tlft.ProgressiveUnfreeze` (a
:class:`~keras_tlft.schedule.Schedule` field), :func:`~keras_tlft.build_model`,
:func:`~keras_tlft.fit_frozen`, :func:`~keras_tlft.lr_find` (through the schedule) and
``keras-tlft inspect --bn``:

- ``"frozen"`` (keras-tlft's default): BatchNorm layers stay non-trainable, so they run in
  inference mode; gamma, beta and the moving statistics stay as loaded.
- ``"affine"`` (what the Keras guide and the TensorFlow MobileNetV2 tutorial mean by
  ``base_model(x, training=False)``, as Keras 2 ran it): gamma and beta of unfrozen blocks
  train; the moving statistics stay exactly as loaded and normalise, because the whole backbone
  runs in inference mode (its ``Dropout`` too).
- ``"train"``: BatchNorm layers of unfrozen blocks train in training mode (batch statistics,
  moving statistics updated), as ``train_bn=True`` did.

This module imports no Keras at import time: the schedule (plain data) validates with it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BN_ATTRIBUTE", "BN_HELP", "BN_POLICIES", "bn_policy", "set_backbone_inference"]

# The policy build_model was given, kept on the model it returns (not saved with it).
BN_ATTRIBUTE = "_tlft_bn"
BN_POLICIES = ("frozen", "affine", "train")
BN_HELP = (
    "'frozen' (BatchNorm stays as loaded), 'affine' (gamma and beta train, the moving statistics "
    "stay as loaded: the backbone runs in inference mode) or 'train' (BatchNorm trains in "
    "training mode)"
)


def bn_policy(bn="frozen", train_bn=None, name: str = "bn") -> str:
    """The policy ``bn`` names, checked; ``train_bn`` is its old spelling (``True``: ``"train"``,
    ``False``: ``"frozen"``), accepted when ``bn`` is left at ``"frozen"`` or agrees with it."""
    if not isinstance(bn, str) or bn not in BN_POLICIES:
        raise ValueError(f"Invalid {name}: expected {BN_HELP}. Received: {name}={bn!r}")
    if train_bn is None:
        return bn
    if not isinstance(train_bn, bool):
        raise ValueError(f"Invalid train_bn: expected True or False (the old spelling of "
                         f"bn='train' and bn='frozen'). Received: train_bn={train_bn!r}")
    implied = "train" if train_bn else "frozen"
    if bn not in ("frozen", implied):
        raise ValueError(
            f"{name} and train_bn (its old spelling) disagree: give {name} only. "
            f"Received: {name}={bn!r}, train_bn={train_bn!r}"
        )
    return implied


def set_backbone_inference(roots: Iterable, bn: str) -> None:
    """Under ``"affine"``, make every layer in (and under) ``roots`` run in inference mode
    whatever ``fit`` passes, as Keras 2's ``base_model(x, training=False)`` did, on every Keras 3
    version; under the other policies, let them follow ``fit``'s ``training`` again."""
    from keras_tlft import _keras_compat as compat

    follows = bn_policy(bn) != "affine"
    for root in roots:
        for layer in compat.sublayers(root, include_self=True):
            compat.set_follows_training(layer, follows)

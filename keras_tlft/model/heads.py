"""Head factories and the head spec parser.

A head spec is a comma-separated list of layers, the same in Python and in the CLI::

    gap,dropout:0.2,dense:1
    flatten,bn,dense:256:relu,dropout:0.5,dense:10:softmax

Tokens: ``gap``, ``gmp``, ``flatten``, ``bn``, ``dropout:RATE``,
``dense:UNITS[:ACTIVATION[:INITIALIZER]]``. The initializer is the Dense kernel's (Keras's
``glorot_uniform`` when left out); ``dense:10:softmax:zeros`` is a zero-initialised classifier,
as LP-FT argues for (a random head's early gradients distort the pretrained features), and
``dense:10::zeros`` the same without an activation. The factories below return such specs, so
every head is built by one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keras_tlft.checks import check_number, received

TOKENS = ("gap", "gmp", "flatten", "bn", "dropout:RATE",
          "dense:UNITS[:ACTIVATION[:INITIALIZER]]")
ACTIVATIONS = (
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish",
    "sigmoid", "hard_sigmoid", "hard_silu", "softmax", "log_softmax", "softplus", "softsign",
    "tanh", "exponential",
)
# The most units a Dense layer of a head may have, num_classes included: a million units behind
# 1,024 features are 4 GiB of float32 weights. No classifier needs more; a bigger number is a
# typo, refused before anything is built (ImageNet-21k has 21,841 classes).
MAX_UNITS = 1_000_000

# Dense kernel initializers a head spec may name (Keras's names; glorot_uniform is Keras's default).
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
                "lecun_normal", "zeros")


@dataclass(frozen=True)
class HeadLayer:
    """One parsed token of a head spec."""

    kind: str
    units: int | None = None
    rate: float | None = None
    activation: str | None = None
    initializer: str | None = None

    def __str__(self) -> str:
        if self.kind == "dropout":
            return f"dropout:{self.rate:g}"
        if self.kind == "dense":
            text = f"dense:{self.units}" + (f":{self.activation}" if self.activation else "")
            if self.initializer:
                text += (":" if self.activation else "::") + self.initializer
            return text
        return self.kind


def _bad(token: str, spec: str, why: str) -> ValueError:
    return ValueError(
        f"Invalid head spec token {token!r}: {why}. Valid tokens: {', '.join(TOKENS)}. "
        f"Received: head={spec!r}"
    )


def parse_head_spec(spec: str) -> list[HeadLayer]:
    """Parse a head spec string into its layers; raises ValueError naming the bad token."""
    if not isinstance(spec, str):
        raise TypeError(
            f"A head spec must be a string such as 'gap,dense:10'. Received: head={spec!r}"
        )
    layers = []
    for raw in spec.split(","):
        token = raw.strip()
        kind, *args = [part.strip() for part in token.lower().split(":")]
        if kind in ("gap", "gmp", "flatten", "bn") and not args:
            layers.append(HeadLayer(kind))
        elif kind == "dropout" and len(args) == 1:
            try:
                rate = float(args[0])
            except ValueError:
                raise _bad(token, spec, "the dropout rate must be a number") from None
            if not 0.0 <= rate < 1.0:
                raise _bad(token, spec, "the dropout rate must be in [0, 1)")
            layers.append(HeadLayer("dropout", rate=rate))
        elif kind == "dense" and len(args) in (1, 2, 3):
            if not args[0].isdigit() or int(args[0]) < 1:
                raise _bad(token, spec, "the number of units must be a positive integer")
            if int(args[0]) > MAX_UNITS:
                raise _bad(token, spec, f"the number of units must be at most {MAX_UNITS:,}")
            activation = (args[1] if len(args) > 1 else None) or None
            if activation is not None and activation not in ACTIVATIONS:
                raise _bad(token, spec, f"unknown activation; use one of {', '.join(ACTIVATIONS)}")
            initializer = args[2] if len(args) == 3 else None
            if initializer is not None and initializer not in INITIALIZERS:
                raise _bad(token, spec,
                           f"unknown initializer; use one of {', '.join(INITIALIZERS)}")
            layers.append(HeadLayer("dense", units=int(args[0]), activation=activation,
                                    initializer=initializer))
        else:
            raise _bad(token or "<empty>", spec, "not a head layer")
    return layers


def format_head_spec(layers: list[HeadLayer]) -> str:
    """The spec string of parsed layers (``parse_head_spec`` inverted)."""
    return ",".join(str(layer) for layer in layers)


def output_activation(num_classes: int) -> str:
    """Softmax over several classes, sigmoid for a single (binary) output."""
    return "softmax" if num_classes > 1 else "sigmoid"


def gap(num_classes: int, dropout: float = 0.0, activation: str | None = None,
        kernel_initializer: str | None = None) -> str:
    """Global average pooling, optional dropout, then the classifier (the Keras guide's head).

    ``kernel_initializer`` is the classifier's (one of :data:`INITIALIZERS`; Keras's
    ``glorot_uniform`` when ``None``): ``"zeros"`` starts fine-tuning from a head that sends no
    random gradient into the backbone, as LP-FT (Kumar et al. 2022) argues for.

    Example:
    ```python
    from keras_tlft import heads

    assert heads.gap(10, kernel_initializer="zeros") == "gap,dense:10:softmax:zeros"
    ```
    """
    if kernel_initializer is not None and kernel_initializer not in INITIALIZERS:
        raise ValueError(
            f"Invalid kernel_initializer: expected one of {', '.join(INITIALIZERS)} or None "
            f"(Keras's glorot_uniform). Received: kernel_initializer={kernel_initializer!r}"
        )
    _check_classes(num_classes)
    _check_dropout(dropout)
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation: expected None or one of {', '.join(ACTIVATIONS)}. "
                         f"{received('activation', activation)}")
    drop = f"dropout:{dropout:g}," if dropout else ""
    init = f":{kernel_initializer}" if kernel_initializer else ""
    return f"gap,{drop}dense:{num_classes}:{activation or output_activation(num_classes)}{init}"


def vgg(num_classes: int, units: int = 4096) -> str:
    """Flatten + Dense(4096, relu) x2 + Dense(classes, softmax): VGG's own classifier."""
    _check_classes(num_classes)
    _check_units("units", units)
    return f"flatten,dense:{units}:relu,dense:{units}:relu,dense:{num_classes}:softmax"


def mlp_bn(num_classes: int, units=(256, 128, 64), dropout: float = 0.5) -> str:
    """Flatten + [BatchNorm, Dense(relu), Dropout] per width + Dense(classes, softmax)."""
    _check_mlp(num_classes, units, dropout)
    hidden = "".join(f"bn,dense:{u}:relu,dropout:{dropout:g}," for u in units)
    return f"flatten,{hidden}dense:{num_classes}:softmax"


def mlp(num_classes: int, units=(256, 128), dropout: float = 0.5) -> str:
    """Flatten + [Dense(relu), Dropout] per width + Dense(classes, softmax)."""
    _check_mlp(num_classes, units, dropout)
    hidden = "".join(f"dense:{u}:relu,dropout:{dropout:g}," for u in units)
    return f"flatten,{hidden}dense:{num_classes}:softmax"


def _check_units(name: str, value) -> None:
    """A Dense layer's width: an integer from 1 to :data:`MAX_UNITS`."""
    check_number(name, value, low=1, allow_low=True, integer=True)
    if value > MAX_UNITS:
        raise ValueError(f"Invalid {name}: expected at most {MAX_UNITS:,} units (a Dense layer "
                         f"that wide is a typo, not a classifier). {received(name, value)}")


def _check_classes(num_classes) -> None:
    _check_units("num_classes", num_classes)


def _check_dropout(dropout) -> None:
    check_number("dropout", dropout, allow_low=True)
    if dropout >= 1:
        raise ValueError(f"Invalid dropout: expected a rate in [0, 1). "
                         f"{received('dropout', dropout)}")


def _check_mlp(num_classes, units, dropout) -> None:
    _check_classes(num_classes)
    _check_dropout(dropout)
    if isinstance(units, (str, bytes)) or not isinstance(units, Sequence):
        raise TypeError(f"Invalid units: expected a sequence of hidden widths, e.g. (256, 128). "
                        f"{received('units', units)}")
    for width in units:
        try:
            _check_units("units", width)
        except ValueError:
            raise ValueError(f"Invalid units: expected positive integer widths up to "
                             f"{MAX_UNITS:,}. {received('units', units)}") from None


PRESETS = {"gap": gap, "vgg": vgg, "mlp_bn": mlp_bn, "mlp": mlp}


def registered_presets() -> dict:
    """Every head preset: ours (:data:`PRESETS`, registered by
    :mod:`keras_tlft.default_plugins`) and the plugins' (their ``register_heads`` hooks)."""
    from keras_tlft.backbones.registry import get_registry

    return get_registry().heads or PRESETS


def resolve_head(head: str | None, num_classes: int | None) -> list[HeadLayer]:
    """The head layers for ``head`` (a preset name or a spec) and ``num_classes``.

    A preset needs ``num_classes``. A spec that does not end with a Dense layer gets the
    classifier ``dense:num_classes`` appended; one that does must agree with ``num_classes``.
    """
    if num_classes is not None:
        _check_classes(num_classes)
    if head is None:
        head = "gap"
    presets = registered_presets()
    if isinstance(head, str) and head.strip().lower() in presets:
        if num_classes is None:
            raise ValueError(
                f"The head preset {head!r} needs num_classes, or write the whole head as a spec "
                f"such as 'gap,dense:10:softmax'. Received: head={head!r}, num_classes=None"
            )
        return parse_head_spec(presets[head.strip().lower()](num_classes))
    layers = parse_head_spec(head)
    if layers[-1].kind != "dense":
        if num_classes is None:
            raise ValueError(
                f"The head spec {head!r} does not end with a dense layer; pass num_classes or "
                f"end it with 'dense:UNITS'. Received: head={head!r}, num_classes=None"
            )
        activation = output_activation(num_classes)
        layers.append(HeadLayer("dense", units=num_classes, activation=activation))
    elif num_classes is not None and layers[-1].units != num_classes:
        raise ValueError(
            f"The head's last dense layer has {layers[-1].units} units but num_classes is "
            f"{num_classes}; make them agree. Received: head={head!r}, num_classes={num_classes}"
        )
    return layers


def build_head(layers: list[HeadLayer], name: str = "head"):
    """A ``keras.Sequential`` of the parsed head layers."""
    import keras

    made = []
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        if layer.kind == "gap":
            made.append(keras.layers.GlobalAveragePooling2D(name=f"{name}_gap_{i}"))
        elif layer.kind == "gmp":
            made.append(keras.layers.GlobalMaxPooling2D(name=f"{name}_gmp_{i}"))
        elif layer.kind == "flatten":
            made.append(keras.layers.Flatten(name=f"{name}_flatten_{i}"))
        elif layer.kind == "bn":
            made.append(keras.layers.BatchNormalization(name=f"{name}_bn_{i}"))
        elif layer.kind == "dropout":
            made.append(keras.layers.Dropout(layer.rate, name=f"{name}_dropout_{i}"))
        else:
            # The classifier computes in float32 under mixed precision, as the Keras guide advises.
            dtype = "float32" if i == last else None
            made.append(
                keras.layers.Dense(
                    layer.units, activation=layer.activation, name=f"{name}_dense_{i}", dtype=dtype,
                    kernel_initializer=layer.initializer or "glorot_uniform",
                )
            )
    return keras.Sequential(made, name=name)

"""Adapters a plugin's builder can use so that its backbone meets the output contract.

The output contract: a backbone has one output, a 4-D feature map ``(batch, height, width,
channels)``; every head (``gap``, ``gmp``, ``flatten``...) and ``ProgressiveUnfreeze`` rely on
it. A transformer that outputs tokens ``(batch, tokens, channels)`` meets it through
:func:`tokens_as_feature_map`. Importing this module imports no Keras; calling it does.
"""

from __future__ import annotations

__all__ = ["tokens_as_feature_map"]


def tokens_as_feature_map(model, grid: tuple[int, int] | None = None, name: str | None = None):
    """A model with the same input whose token output is reshaped into a 4-D feature map.

    Args:
        model: a ``keras.Model`` with one output of shape ``(batch, tokens, channels)``.
        grid: ``(height, width)`` with ``height * width == tokens``, for tokens that are the
            cells of an image grid in row order (Swin); ``None`` lays the tokens out as one row,
            ``(batch, 1, tokens, channels)``, so global pooling averages every token (ViT,
            DINOv2 with its class token).
        name: the returned model's name; defaults to ``model.name``.

    Returns:
        A ``keras.Model`` from ``model.inputs`` to the feature map, sharing ``model``'s layers.

    Example:

    ```python
    def build(input_shape, weights, include_top):
        vit = my_library.ViT(input_shape=input_shape)
        return tokens_as_feature_map(vit)
    ```
    """
    import keras

    output = model.output
    if isinstance(output, (list, tuple, dict)) or len(output.shape) != 3:
        raise ValueError(
            "tokens_as_feature_map expects a model with one output of shape (batch, tokens, "
            f"channels). Received: output shape={getattr(output, 'shape', type(output).__name__)}"
        )
    tokens, channels = output.shape[1], output.shape[2]
    if grid is None:
        target = (1, tokens, channels)
    else:
        height, width = grid
        if tokens is not None and height * width != tokens:
            raise ValueError(
                f"grid {tuple(grid)} holds {height * width} cells but the model outputs {tokens} "
                f"tokens; pass a grid whose height * width equals the tokens. Received: "
                f"grid={tuple(grid)}"
            )
        target = (height, width, channels)
    mapped = keras.layers.Reshape(target, name="tokens_as_map")(output)
    return keras.Model(model.inputs, mapped, name=name or model.name)

"""DINOv2 and DINOv3 backbones with each transformer layer a layer of the model.

keras-hub runs a DINO backbone's transformer layers inside one ``encoder`` layer, so cut at the
model's top level a DINO backbone is three blocks (embeddings, encoder, final norm), and gradual
unfreezing or layer-wise learning-rate decay (timm, BEiT: 0.75 per block from the head down)
cannot tell one transformer layer from another. :func:`layers_as_model_layers` rebuilds
keras-hub's graph from the same layer objects with the encoder's loop written out, so the
model's layers are ``embeddings`` (and DINOv3's ``rope_embedding``), ``layers_0`` ...
``layers_{n-1}`` and ``layernorm``, and :func:`dino_blocks` makes each transformer layer a
block.

The layer objects are keras-hub's own, so their weights (random, or loaded from a preset before
the rebuild) are the same variables and the output is keras-hub's; only public attributes of
keras-hub's backbones are read (``embeddings``, ``rope_embedding``, ``encoder.layers``,
``layernorm``, ``num_register_tokens``), and a ``.keras`` file of the result reloads, keras-hub's
layers being registered serializables. Any plugin can unroll its own backbones the same way.
"""

from __future__ import annotations

DINO_CONSTRUCTORS = ("DINOV2Backbone", "DINOV3Backbone")


def dino_blocks(num_layers: int) -> tuple:
    """The block rules of a DINO backbone of ``num_layers`` transformer layers: ``embedding``
    (the input, patch and position embeddings), ``layer_0`` ... ``layer_{n-1}``, ``final_norm``.

    keras-hub prefixes the names of the embeddings and the final norm with the backbone's name
    when it has one (a backbone loaded from a preset's config is named ``dinov2_backbone``...),
    hence the optional prefix.
    """
    return (
        ("embedding", "^(images|pixel_values)$"),
        *((f"layer_{i}", rf"^(\w+_)?layers_{i}$") for i in range(num_layers)),
        ("final_norm", r"^(\w+_)?layernorm$"),
    )


def layers_as_model_layers(backbone):
    """``backbone`` (a keras-hub ``DINOV2Backbone`` or ``DINOV3Backbone``) as a functional model
    whose transformer layers are its own layers, with the same input, weights and output."""
    import keras

    image = backbone.inputs[0]
    x = backbone.embeddings(image)
    options = {}
    if hasattr(backbone, "rope_embedding"):  # DINOv3: rotary positions, prefix tokens unrotated
        options = {
            "position_embeddings": backbone.rope_embedding(image),
            "num_prefix_tokens": 1 + backbone.num_register_tokens,
        }
    for layer in backbone.encoder.layers:
        x = layer(x, **options)
    return keras.Model(image, backbone.layernorm(x), name=backbone.name)

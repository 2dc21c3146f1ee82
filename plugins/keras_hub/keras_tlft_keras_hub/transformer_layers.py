"""keras-hub's ViTs (DINOv2, DINOv3, ViT) with each transformer layer a layer of the model.

keras-hub runs a ViT's transformer layers inside one encoder layer, so cut at the model's top
level the backbone is two or three blocks (embeddings, encoder, final norm), and gradual
unfreezing or layer-wise learning-rate decay (timm, BEiT: 0.75 per block from the head down)
cannot tell one transformer layer from another. :func:`layers_as_model_layers` rebuilds
keras-hub's graph from the same layer objects with the encoder's loop written out, and
:func:`transformer_blocks` makes each transformer layer a block:

- DINOv2, DINOv3: ``embeddings`` (and DINOv3's ``rope_embedding``), ``layers_0`` ...
  ``layers_{n-1}``, ``layernorm``; blocks ``embedding``, ``layer_0`` ..., ``final_norm``;
- ViT: ``vit_patching_and_embedding``, ``dropout``, ``transformer_block_1`` ...
  ``transformer_block_n``, ``ln``; blocks ``embedding``, ``block_1`` ..., ``final_norm``.

The layer objects are keras-hub's own, so their weights (random, or loaded from a preset before
the rebuild) are the same variables and the output is keras-hub's (bit for bit, on TensorFlow,
in ``tests/test_vit_blocks.py``); only public
attributes and layers of keras-hub's backbones are read. A ``.keras`` file of a DINO model
reloads; one of a ViT does not in keras-hub 0.32, with or without the rebuild
(``ViTPatchingAndEmbedding.get_config`` writes arguments its constructor refuses). Any plugin
can unroll its own backbones the same way.

DeiT is not rebuilt: its layers return ``(output, None)`` unless asked for their attention
scores, and a functional model's layers must return tensors; asking for the scores would take
Keras's ``MultiHeadAttention`` off its fused attention (and raise under
``keras.config.enable_flash_attention()``), so a DeiT stays ``embedding`` and ``encoder``.
"""

from __future__ import annotations

UNROLLED = ("DINOV2Backbone", "DINOV3Backbone", "ViTBackbone")
DINO = ("DINOV2Backbone", "DINOV3Backbone")


def transformer_blocks(constructor: str, num_layers: int) -> tuple:
    """The block rules of a keras-hub ``constructor`` backbone of ``num_layers`` transformer
    layers, rebuilt by :func:`layers_as_model_layers`: the embeddings (with the input), one
    block per transformer layer, the final norm.

    keras-hub prefixes the names of a DINO's embeddings and final norm with the backbone's name
    when it has one (a backbone loaded from a preset's config is named ``dinov2_backbone``...),
    hence the optional prefix.
    """
    if constructor in DINO:
        return (
            ("embedding", "^(images|pixel_values)$"),
            *((f"layer_{i}", rf"^(\w+_)?layers_{i}$") for i in range(num_layers)),
            ("final_norm", r"^(\w+_)?layernorm$"),
        )
    return (
        ("embedding", "^(images|input)"),
        *((f"block_{i}", f"^transformer_block_{i}$") for i in range(1, num_layers + 1)),
        ("final_norm", "^ln$"),
    )


def layers_as_model_layers(backbone):
    """``backbone`` (a keras-hub ``DINOV2Backbone``, ``DINOV3Backbone`` or ``ViTBackbone``) as a
    functional model whose transformer layers are its own layers, with the same input, weights
    and output."""
    import keras

    image = backbone.inputs[0]
    if type(backbone).__name__ in DINO:
        embeddings, layers, norm = backbone.embeddings, backbone.encoder.layers, backbone.layernorm
        x = embeddings(image)
    else:  # ViT: three layers, the input, the embeddings and the encoder
        _, embeddings, encoder = backbone.layers
        layers, norm = encoder.encoder_layers, encoder.layer_norm
        x = encoder.dropout(embeddings(image))  # the encoder drops out before its first layer
    options = {}
    if hasattr(backbone, "rope_embedding"):  # DINOv3: rotary positions, prefix tokens unrotated
        options = {
            "position_embeddings": backbone.rope_embedding(image),
            "num_prefix_tokens": 1 + backbone.num_register_tokens,
        }
    for layer in layers:
        x = layer(x, **options)
    return keras.Model(image, norm(x), name=backbone.name)

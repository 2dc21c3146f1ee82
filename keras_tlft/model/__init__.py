"""The model: ``build_model``, and a model's backbone found and cut into blocks.

- ``assembly``: :func:`~keras_tlft.build_model` (preprocessing, backbone and head in one model).
- ``heads``: head factories and the head spec parser (public as ``keras_tlft.heads``).
- ``preprocessing``: the preprocessing a backbone's spec asks for, inside the model.
- ``blocks``: unfreeze states (``"none"``, ``k``, ``"all"``, ``"from:..."``), blocks, freezing.
- ``batchnorm``: the BatchNorm policies (``bn="frozen"``, ``"affine"``, ``"train"``).
- ``discovery``: where a model's backbone is, and its blocks.
- ``graph``: the model cut at the backbone's output (what a cached frozen phase needs).
"""

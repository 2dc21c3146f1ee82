"""Reports: what the CLI renders, as data.

- ``report``: :func:`~keras_tlft.inspect_backbone`, a backbone's layers, blocks and plan.
- ``bench``: the measurement engine of ``keras-tlft bench`` (no printing).
"""

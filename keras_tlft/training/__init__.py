"""Training on top of the callback: the recipes that run ``fit`` for you.

- ``recipes``: :func:`~keras_tlft.fine_tune`, fastai's one-line fine-tuning.
- ``cache``: :func:`~keras_tlft.fit_frozen`, frozen epochs on cached backbone features, with
  ``feature_store`` (where the features live) and ``batching`` (batches in).
- ``history``: :func:`~keras_tlft.join_histories`, one History for several ``fit`` calls.
- ``lr_finder``: :func:`~keras_tlft.lr_find`, the learning-rate range test; ``lr_result`` its
  results.
"""

"""Callbacks: :class:`~keras_tlft.ProgressiveUnfreeze` (the policy) and its mechanics.

- ``unfreeze``: ProgressiveUnfreeze, the schedule applied inside one ``fit``.
- ``staging``: what a stage change does to the model.
- ``stage_records``: what a run has done so far, the records a resumed run reads.
- ``optim``: the optimizer mechanics (per-variable learning rates, rebuilt across stages);
  ``fused_adam``: Keras's Adam as one TensorFlow op a variable, which retraces cheaper.
- ``stage_masks``: stage changes without a retrace (``stage_change="mask"``).
- ``traced_forward``: the backbone's forward pass traced once per fit (TensorFlow).
- ``compile_ahead``: the next stage's step prepared while a stage trains (when, and the plan);
  ``compile_ahead_jax`` and ``compile_ahead_tf``: each backend's part.
- ``plateau``: the plateau trigger (when the next stage begins on a plateau).
- ``fit_checks``: what is checked as a ``fit`` begins.
- ``early_stopping``: :class:`~keras_tlft.StageEarlyStopping`.
- ``drift``: :class:`~keras_tlft.FeatureDrift`.
"""

"""``fine_tune``: fastai's one-line fine-tuning, on the pieces keras-tlft already has.

Frozen epochs on cached backbone features (:func:`~keras_tlft.fit_frozen`) when that cannot
change the result, then ``model.fit`` with a :class:`~keras_tlft.ProgressiveUnfreeze` schedule
for the rest, and one joined ``History`` (:func:`~keras_tlft.join_histories`).
"""

from __future__ import annotations

from keras_tlft.checks import check_number, received
from keras_tlft.schedules.presets import DEFAULT_BACKBONE_LR_RATIO, default_schedule
from keras_tlft.schedules.schedule import Schedule
from keras_tlft.schedules.schedule_input import parse_schedule

# DEFAULT_BACKBONE_LR_RATIO is re-exported where keras-tlft 0.1 defined it; the one default
# lives in keras_tlft.presets.
__all__ = ["DEFAULT_BACKBONE_LR_RATIO", "fine_tune", "frozen_prefix"]


def fine_tune(model, x=None, y=None, *, epochs: int, frozen_epochs: int | None = None,
              schedule=None, validation_data=None, batch_size: int | None = None,
              callbacks=None, verbose="auto", backbone=None, blocks=None,
              cache_prefix: bool = True, max_memory_bytes: int | None = None,
              learning_rate=None, stage_change: str = "auto"):
    """Fine-tune a compiled transfer model in one call: frozen epochs, then a schedule.

    fastai's ``learn.fine_tune(epochs)``: the head trains alone for ``frozen_epochs`` epochs,
    then the backbone unfreezes as ``schedule`` says, until epoch ``epochs``. Two or more
    frozen epochs run through :func:`~keras_tlft.fit_frozen` (the backbone's features computed
    once, however many epochs) when :func:`~keras_tlft.check_cacheable` finds that safe (no
    augmentation or dropout before the backbone, a frozen backbone without trainable
    BatchNorm); the rest runs in ``model.fit`` with a :class:`~keras_tlft.ProgressiveUnfreeze`
    callback, so epochs are numbered across the whole run, as the schedule counts them. A single
    frozen epoch runs in that same ``fit``, as its first stage: a feature pass costs as much as
    the epoch it would save, plus a trace of its own, so with the default ``frozen_epochs=1``
    ``fine_tune(model, x, y, epochs=n)`` trains exactly as
    ``model.fit(x, y, epochs=n, callbacks=[ProgressiveUnfreeze()])``.

    The default schedule is the library's one default (``ProgressiveUnfreeze()``'s and the
    bare ``"gradual"`` preset's, :func:`keras_tlft.presets.default_schedule`): after the
    frozen epochs one more block unfreezes every epoch, top block first, the head at the
    optimizer's learning rate and the unfrozen blocks at a tenth of it
    (``backbone_lr_ratio=0.1``), without a per-block decay, which on a deep backbone would
    leave its lowest blocks all but frozen (``1/2.6`` per block puts the lowest of
    MobileNetV2's 19 blocks at ``3e-8`` of the top block's rate). keras-tlft 0.1's default
    (everything at once after one frozen epoch) is
    ``schedule=Schedule({0: "none", 1: "all"}, backbone_lr_ratio=0.1)``. Pass
    ``schedule="ulmfit"`` or ``"layer_decay"`` for rates per block, ``schedule="lp_ft"`` for
    LP-FT (its probe then runs on cached features).

    Args:
        model: a compiled model with a backbone (e.g. from :func:`keras_tlft.build_model`).
        x: input data, as for ``model.fit``: arrays, a ``tf.data.Dataset`` or a
            ``keras.utils.PyDataset``.
        y: targets, for arrays only.
        epochs: the epoch to stop at (the whole run: frozen epochs included).
        frozen_epochs: epochs of the head alone before the schedule unfreezes anything.
            ``None`` (the default): 1 with the default schedule; with a given schedule, the
            epochs before its first stage that trains part of the backbone (``lp_ft``: its
            ``probe_epochs``; ``two_phase``: its ``frozen_epochs``; ``gradual`` and
            ``ulmfit``: their first block's epoch), and 0 for a plateau schedule, whose frozen
            stage ends when its metric says. A given schedule must not unfreeze earlier.
        schedule: anything ``ProgressiveUnfreeze`` accepts (a preset string, a mapping
            ``{epoch: unfreeze}``, a JSON file, a ``Schedule``), its epochs counted from the
            first frozen one. ``None``: the default above.
        validation_data: as for ``model.fit``, used in both parts.
        batch_size: as for ``model.fit``, used in both parts.
        callbacks: Keras callbacks, given to every part (not a ``ProgressiveUnfreeze``: the
            schedule is this function's); each part is a ``fit`` of its own (the frozen epochs,
            each stage on a cached prefix, the rest), so ``on_train_begin`` runs at each.
        verbose: ``"auto"``, 0, 1 or 2, as for ``model.fit``; other than 0, the callback also
            prints its blocks and stages, and which way the frozen epochs run.
        backbone: where the backbone is, as ``ProgressiveUnfreeze`` and ``fit_frozen`` take it.
        blocks: its blocks, as ``ProgressiveUnfreeze`` takes them.
        cache_prefix: a stage that lasts more than one epoch and keeps the bottom of the
            backbone frozen (``fine_tune_at``, ``two_phase``, ``gradual``'s early stages) trains
            on the frozen bottom's outputs computed once per stage
            (:func:`keras_tlft.training.prefix_cache.fit_stages`), where that gives what
            ``model.fit`` gives: NumPy arrays, no distribution strategy, nothing random and no
            BatchNorm in training mode below the lowest trainable layer. Elsewhere, and with
            ``False``, ``model.fit`` (``verbose=1`` says why).
        max_memory_bytes: the most bytes of cached outputs kept in memory (then a file in the
            system's temporary directory), for the frozen epochs and each stage; defaults to
            half of the memory available (see :func:`~keras_tlft.fit_frozen`).
        learning_rate: ``None`` (the default) trains at the optimizer's learning rate;
            ``"auto"`` first runs :func:`~keras_tlft.lr_find` on the frozen model (the head
            alone, 100 steps, the model left as it was) and sets the optimizer's learning rate
            (the head's; the backbone's follows through ``backbone_lr_ratio``) to its
            suggestion, the minimum's rate divided by 10; ``verbose`` other than 0 prints it.
            With ``ProgressiveUnfreeze`` the same is ``result = lr_find(model, x, y)`` before
            ``fit``, then ``model.optimizer.learning_rate = result.suggestions["head"]``.
            Measured (``benchmarks/transfer_matrix.py``, EfficientNet-Lite0 -> Fashion-MNIST,
            10 labels/class): the suggestion was 0.07-0.13 for Adam, 100x the fixed 1e-3, and
            with the backbone at a tenth of it every seed ended at chance (0.100). There the
            range test's 100 steps of 32 pass 32 times over the 100 images and measure their
            memorisation; ``lr_find`` warns when it passes more than 4 times (with 1,000 images,
            3.2 passes, it suggested 0.0095). Prefer the fixed rate on data that small.

        stage_change: ``"auto"``, ``"retrace"`` or ``"mask"``, as ``ProgressiveUnfreeze`` takes
            it: how the stages that run in one ``fit`` reach its compiled step.

    Returns:
        One ``keras.callbacks.History`` of every epoch, ``0`` to ``epochs - 1``.

    Example:

    ```python
    model = tlft.build_model("mobilenet_v2", num_classes=10)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = tlft.fine_tune(model, x, y, epochs=6, validation_data=(x_val, y_val))
    # LP-FT: a 10-epoch linear probe on cached features, then everything at 1e-5.
    history = tlft.fine_tune(model, x, y, epochs=14, schedule="lp_ft:probe_epochs=10")
    ```
    """
    from keras_tlft.callbacks.unfreeze import ProgressiveUnfreeze
    from keras_tlft.model.graph import check_cacheable
    from keras_tlft.model.input_range import check_input_range, first_inputs
    from keras_tlft.training.cache import fit_frozen
    from keras_tlft.training.history import join_histories
    from keras_tlft.training.prefix_cache import fit_stages

    _check_compiled(model)
    check_number("epochs", epochs, low=1, allow_low=True, integer=True)
    check_number("frozen_epochs", frozen_epochs, allow_none=True, allow_low=True, integer=True)
    if isinstance(verbose, bool) or verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"Invalid verbose: expected 'auto', 0, 1 or 2. "
                         f"{received('verbose', verbose)}")
    callbacks = _check_callbacks(callbacks, ProgressiveUnfreeze)
    _check_learning_rate(learning_rate, model)
    schedule, frozen_epochs = _schedule_and_frozen_epochs(schedule, frozen_epochs)
    if epochs <= frozen_epochs:
        raise ValueError(
            f"fine_tune has nothing to fine-tune: its {frozen_epochs} frozen epoch(s) take the "
            f"whole run. Expected epochs > frozen_epochs (or fit_frozen for a frozen run "
            f"only). Received: epochs={epochs}, frozen_epochs={frozen_epochs}")
    unfreeze = ProgressiveUnfreeze(schedule, backbone=backbone, blocks=blocks,
                                   verbose=0 if verbose == 0 else 1, stage_change=stage_change)
    check_input_range(model, first_inputs(x, batch_size), "fine_tune")
    if learning_rate == "auto":
        _auto_learning_rate(model, x, y, batch_size, verbose)
    fit_args = dict(batch_size=batch_size, validation_data=validation_data, verbose=verbose)
    parts = []
    initial_epoch = 0
    if frozen_epochs == 1:
        _say(verbose, "fine_tune: frozen epoch 0 in model.fit, the schedule's first stage (one "
                      "epoch: a feature pass would cost as much as it saves)")
    elif frozen_epochs:
        try:
            check_cacheable(model, backbone)
            reason = None
        except ValueError as exc:
            reason = str(exc)
        _say(verbose, f"fine_tune: frozen epochs 0-{frozen_epochs - 1} " + (
            "on cached backbone features (fit_frozen)" if reason is None else
            f"in model.fit, as caching would change the result: {reason}"))
        if reason is None:
            parts.append(fit_frozen(model, x, y, epochs=frozen_epochs, callbacks=callbacks,
                                    backbone=backbone, max_memory_bytes=max_memory_bytes,
                                    **fit_args))
            initial_epoch = frozen_epochs
    if cache_prefix:
        parts += fit_stages(model, x, y, unfreeze, callbacks, initial_epoch, epochs,
                            max_memory_bytes=max_memory_bytes,
                            say=lambda message: _say(verbose, message), **fit_args)
    else:
        parts.append(model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch,
                               callbacks=[unfreeze, *callbacks], **fit_args))
    return join_histories(*parts)


def frozen_prefix(schedule: Schedule) -> int | None:
    """The epochs before ``schedule``'s first stage that trains part of the backbone (``None``:
    it never does); 0 for a plateau schedule, whose stages have no epochs."""
    if schedule.trigger == "plateau":
        return 0
    if not schedule.stages:
        return (schedule.every or 1) if schedule.start is None else schedule.start
    unfreezing = [s.epoch for s in schedule.stages if s.unfreeze.kind != "none"]
    return unfreezing[0] if unfreezing else None


def _schedule_and_frozen_epochs(schedule, frozen_epochs) -> tuple[Schedule, int]:
    if schedule is None:
        if frozen_epochs is None:
            schedule = default_schedule()
            return schedule, frozen_prefix(schedule)
        return default_schedule(start=frozen_epochs), frozen_epochs
    schedule = parse_schedule(schedule)
    prefix = frozen_prefix(schedule)
    if frozen_epochs is None:
        if prefix is None:
            raise ValueError(
                "fine_tune's schedule never unfreezes the backbone: expected a schedule with a "
                "stage that trains part of it (or fit_frozen for a frozen run). "
                f"{received('schedule', schedule.to_json())}")
        return schedule, prefix
    if schedule.trigger == "plateau":
        first = schedule.stages[0].unfreeze.kind if schedule.stages else "none"
        if frozen_epochs and first != "none":
            raise ValueError(
                "fine_tune's frozen epochs would freeze what the plateau schedule's first stage "
                f"trains ({first}): expected frozen_epochs=0 or a first stage 'none'. "
                f"Received: frozen_epochs={frozen_epochs}, schedule={schedule.to_json()}")
    elif prefix is not None and frozen_epochs > prefix:
        raise ValueError(
            f"fine_tune's schedule unfreezes part of the backbone at epoch {prefix}, during the "
            f"frozen epochs: expected frozen_epochs <= {prefix}, or a schedule whose first "
            "unfreezing stage begins later (epochs count across the whole run). "
            f"Received: frozen_epochs={frozen_epochs}, schedule={schedule.to_json()}")
    return schedule, frozen_epochs


def _check_learning_rate(learning_rate, model) -> None:
    if learning_rate is None:
        return
    if learning_rate != "auto":
        raise ValueError("Invalid learning_rate: expected None (the optimizer's) or 'auto' "
                         f"(lr_find's suggestion). {received('learning_rate', learning_rate)}")
    import keras

    from keras_tlft import _keras_compat as compat

    rate = compat.learning_rate_variable(model.optimizer)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) or callable(rate):
        raise ValueError(
            "learning_rate='auto' sets the optimizer's learning rate, but the optimizer has a "
            "learning-rate schedule: compile with a constant rate, or leave learning_rate=None. "
            f"Received: learning_rate='auto', optimizer={type(model.optimizer).__name__}")


def _auto_learning_rate(model, x, y, batch_size, verbose) -> float:
    """The optimizer's learning rate set to lr_find's suggestion on the frozen model."""
    from keras_tlft.training.lr_finder import lr_find

    result = lr_find(model, x, y, batch_size=batch_size or 32)
    rate = result.tests[0].suggestion
    if rate is None:
        raise ValueError(
            "learning_rate='auto' found no suggestion: lr_find's loss never went down on the "
            "frozen model. Expected data a model can learn from; pass learning_rate=None to "
            "train at the optimizer's rate. Received: learning_rate='auto'")
    model.optimizer.learning_rate = rate
    _say(verbose, f"fine_tune: learning_rate='auto': {rate:.3g} (lr_find's suggestion on "
                  f"the frozen model, the minimum's rate / 10)")
    return rate


def _check_compiled(model) -> None:
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "fine_tune trains with the model's own loss, metrics and optimizer: compile the "
            "model first, e.g. model.compile('adam', 'sparse_categorical_crossentropy', "
            f"metrics=['accuracy']). Received: model.compiled={getattr(model, 'compiled', False)}")


def _check_callbacks(callbacks, unfreeze_type) -> list:
    import keras

    callbacks = list(callbacks or [])
    for i, callback in enumerate(callbacks):
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(f"Invalid callbacks: expected keras.callbacks.Callback objects. "
                            f"Received: callbacks[{i}]={callback!r}")
        if isinstance(callback, unfreeze_type):
            raise ValueError(
                "fine_tune makes its own ProgressiveUnfreeze from schedule=: pass the schedule "
                "(and backbone=, blocks=) to fine_tune instead of the callback. "
                f"Received: callbacks[{i}]={callback!r}")
    return callbacks


def _say(verbose, message: str) -> None:
    if verbose != 0:
        from keras_tlft import _keras_compat as compat

        compat.print_msg(message)

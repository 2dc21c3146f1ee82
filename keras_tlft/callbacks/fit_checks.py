"""What :class:`~keras_tlft.ProgressiveUnfreeze` checks as a ``fit`` begins: a compiled model, one
such callback per fit, the length a slanted triangular shape needs, and the warnings about an
optimizer state Keras skipped and a BatchNorm policy other than the model's.

Each function raises or warns with the message a user sees; the callback decides when.
"""

from __future__ import annotations

import warnings

__all__ = ["check_compiled", "check_one_owner", "check_resume_file", "fit_length",
           "warn_bn_mismatch", "warn_state_skipped"]

_RESUME_EXPECTED = ("Expected the .keras file this model was saved to (model.save) during a fit "
                    "with this callback, this schedule and this optimizer")


def check_compiled(model) -> None:
    """Raise ``ValueError`` unless ``model`` was compiled (it has an optimizer)."""
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "ProgressiveUnfreeze needs a compiled model: call model.compile(optimizer, "
            "loss) before fit. Received: model.optimizer=None"
        )


def check_one_owner(callback, owner) -> None:
    """Raise ``ValueError`` when ``owner``, the ProgressiveUnfreeze that claimed the model's
    optimizer last, is not ``callback``: two of them in one fit."""
    if owner is not callback:
        raise ValueError(
            "Two ProgressiveUnfreeze callbacks in one fit: both would set the trainable "
            "flags and learning rates of the same model, and the last one would silently "
            "win. Expected one ProgressiveUnfreeze per fit (put every stage in one "
            f"schedule). Received: schedules {callback.schedule.to_json()} and "
            f"{owner.schedule.to_json()}"
        )


def fit_length(schedule, params) -> tuple[int, int] | None:
    """``(epochs, steps per epoch)`` of a fit with ``params`` (the callback's), which a slanted
    triangular shape needs; ``None`` for a constant one."""
    if schedule.stage_lr_shape == "constant":
        return None
    epochs, steps = (params or {}).get("epochs"), (params or {}).get("steps")
    if not steps or not epochs:
        raise ValueError(
            "A slanted triangular learning-rate shape needs the number of steps per epoch "
            "to size each stage's triangle: pass steps_per_epoch to fit, or data of known "
            "length (arrays, a batched tf.data.Dataset of known cardinality, a PyDataset). "
            f"Received: epochs={epochs!r}, steps={steps!r}"
        )
    return int(epochs), int(steps)


def warn_state_skipped() -> None:
    """Warn that fine-tuning goes on with a fresh optimizer state (the optimizer was built but
    never stepped while the model trains as a later stage than the first sets it)."""
    warnings.warn(
        "ProgressiveUnfreeze found the optimizer already built but never stepped while "
        "the model trains what a later stage than the schedule's first trains: fine-tuning "
        "goes on with a fresh optimizer state and stage records. If this model was loaded "
        "from a .keras file saved during fine-tuning, Keras skipped the optimizer state saved "
        "in it ('Skipping variable loading for optimizer': the callback had built the "
        "optimizer for every variable the schedule can unfreeze, keras.saving.load_model "
        "builds it for those trainable when the file was saved). To keep that state, load "
        "the model with keras.saving.load_model('PATH.keras', compile=False), compile it as "
        "for the first run and pass resume_from='PATH.keras'; to predict only, load it with "
        "compile=False.",
        stacklevel=4,
    )


def warn_bn_mismatch(bn: str, built_with: str) -> None:
    """Warn that the callback's BatchNorm policy ``bn`` differs from the model's."""
    warnings.warn(
        f"ProgressiveUnfreeze(bn={bn!r}) trains a model built with "
        f"build_model(bn={built_with!r}): the callback's policy applies. Expected the "
        f"same bn for both. Received: bn={bn!r}",
        stacklevel=4,
    )


def check_resume_file(path: str, model) -> None:
    """Raise ``ValueError`` naming ``path`` unless it is a readable ``.keras`` file whose saved
    optimizer is laid out as ``model``'s (built for the schedule) and which holds a weight of
    every shape ``model`` has: checked before any weight is loaded, so that a wrong file leaves
    the model as it was."""
    import collections

    from keras_tlft import _keras_compat as compat
    from keras_tlft.checks import regular_file_problem

    def refuse(problem: str):
        raise ValueError(f"Cannot resume from {path!r}: {problem}. {_RESUME_EXPECTED}; nothing "
                         f"was loaded. Received: resume_from={path!r}")

    problem = regular_file_problem(path)
    if problem is not None:
        refuse(f"the file {problem}")
    try:
        layout = compat.saved_variable_shapes(path)
    except Exception as exc:  # zipfile.BadZipFile, OSError (h5py), KeyError, EOFError...
        refuse(f"it is not a readable .keras file ({type(exc).__name__}: {exc})")
    if layout is None:
        return  # weights kept in another form: Model.load_weights checks them itself
    layer_shapes, optimizer_shapes = layout
    wanted = [tuple(v.shape) for v in model.optimizer.variables]
    if optimizer_shapes != wanted:
        refuse(f"its optimizer state ({len(optimizer_shapes)} variables) is not laid out as "
               f"this model's optimizer, built for every weight the schedule can unfreeze and "
               f"the callback's stage records ({len(wanted)} variables)")
    missing = collections.Counter(tuple(w.shape) for w in model.weights)
    missing.subtract(collections.Counter(layer_shapes))
    lacking = sorted(shape for shape, n in missing.items() if n > 0)
    if lacking:
        refuse(f"it holds no weight of shape {', '.join(map(str, lacking[:3]))} that this "
               "model has: it was saved from another model")

"""An optimizer's state across a rebuild: :class:`~keras_tlft.callbacks.optim.StagedOptimizer`
rebuilds the optimizer for a larger set of variables and carries the state it had over by name."""

from __future__ import annotations

from keras_tlft import _keras_compat as compat

__all__ = ["count_init_variables", "restore_by_name", "values_by_name"]


def count_init_variables(optimizer) -> int:
    """How many of ``optimizer``'s variables its constructor made (they precede those ``build``
    makes): counted on a fresh twin built from its config."""
    try:
        twin = type(optimizer).from_config(optimizer.get_config())
        return len(twin.variables)
    except Exception:  # a custom optimizer without a faithful config
        n = 1
        lr = compat.learning_rate_variable(optimizer)
        if lr is not None and any(lr is v for v in optimizer.variables[:2]):
            n = 2
        return n


def values_by_name(variables) -> dict:
    """The variables' current values by name. On JAX they stay device arrays (immutable, so a
    snapshot) with their sharding: a host copy would gather each one whole, and is impossible
    for an array that spans other processes' devices (ModelParallel across hosts)."""
    import keras

    on_jax = keras.backend.backend() == "jax"
    values: dict = {}
    for v in variables:
        value = v.value if on_jax else keras.ops.convert_to_numpy(v.value)
        values.setdefault(v.name, []).append(value)
    return values


def restore_by_name(variables, saved: dict) -> int:
    """Assign saved values to the new variables of the same name (a slot's name embeds its model
    variable's path; the scope above it differs when a LossScaleOptimizer built it). Returns how
    many saved values found no unambiguous match."""
    new_paths: dict = {}
    for v in variables:
        new_paths.setdefault(v.name, []).append(v)
    skipped = 0
    for path, values in saved.items():
        targets = new_paths.get(path, [])
        if len(values) != 1 or len(targets) != 1 or tuple(targets[0].shape) != values[0].shape:
            skipped += len(values)
            continue
        targets[0].assign(values[0])
    return skipped

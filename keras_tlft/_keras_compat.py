"""Every use of Keras's private API in keras-tlft, in one place.

Each function says why it needs the private API, the public alternative when there is one, and the
Keras versions it was checked on. The rest of the package reads as if only public API existed;
when Keras changes, this file (and the tests that exercise it) is where to look.
"""

from __future__ import annotations

__all__ = [
    "append_variables",
    "built_variables",
    "compile_arguments",
    "draws_random_numbers",
    "follows_training",
    "is_built_for",
    "learning_rate_variable",
    "monitor_mode",
    "nadam_product",
    "print_msg",
    "producer",
    "saved_variable_shapes",
    "set_built_for",
    "set_follows_training",
    "sublayers",
    "unbuild",
    "var_key",
    "wrap_optimizer_methods",
]


def sublayers(layer, include_self: bool = False, recursive: bool = True) -> list:
    """Every layer inside ``layer`` (depth first, each once), optionally ``layer`` itself.

    Why: ``Layer._flatten_layers`` is how Keras itself walks a layer tree; it also finds layers
    kept in attributes of a composite layer (keras-hub's HGNetV2 stages), which ``Model.layers``
    does not list. Public alternative: ``Model.layers`` (top level only, models only).
    Checked: Keras 3.15.1.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def producer(tensor) -> tuple:
    """``(operation, input_tensors)``: the operation whose call in a functional graph produced
    the symbolic ``tensor``, and the tensors it was called on.

    Why: walking a graph backwards from its outputs to find every call of one layer (and to tell
    one call from several) needs the node that made each tensor, ``tensor._keras_history`` and
    ``operation._inbound_nodes``; Keras's ``Function`` walks them the same way. Public
    alternative: ``layer.output`` when the layer is called exactly once, which cannot tell a
    layer called twice or not on the path at all.
    Checked: Keras 3.15.1.
    """
    operation, node_index, _ = tensor._keras_history
    return operation, list(operation._inbound_nodes[node_index].input_tensors)


def draws_random_numbers(layer) -> bool:
    """Whether ``layer`` owns a seed generator, i.e. draws random numbers when it runs
    (augmentation, ``Dropout``, ``GaussianNoise``, any custom layer with a ``SeedGenerator``).

    Why: Keras keeps a layer's seed generators in ``Layer._seed_generators`` and offers no public
    way to ask. Public alternative: none (checking known layer classes misses custom ones).
    Checked: Keras 3.15.1.
    """
    return bool(getattr(layer, "_seed_generators", None))


def follows_training(layer) -> bool:
    """Whether ``layer`` runs in the mode its caller passes (``fit``'s ``training=True``), rather
    than always in inference mode (:func:`set_follows_training`)."""
    return "training" in getattr(layer, "_call_context_args", ("training",))


def set_follows_training(layer, follows: bool) -> None:
    """Make ``layer`` run in inference mode whatever ``training`` ``fit`` or an outer model passes
    (``follows=False``: Keras 2's ``base_model(x, training=False)``, layer by layer), or follow it
    again (``True``, as Keras builds every layer).

    Why: a layer resolves ``training`` (and Keras's ``Functional`` injects the outer model's into
    each layer it calls) only for the names in ``Layer._call_context_args``; without
    ``"training"`` there, its ``call`` gets the ``training`` its node recorded, normally none,
    and ``BatchNormalization`` and ``Dropout`` run in inference mode. The same holds for a layer
    called by a composite layer with ``training=training``. Public alternative: calling the
    backbone with ``training=False``, which Keras 3.15 and earlier override with ``fit``'s
    ``training=True`` (keras-team/keras#20285), and which Keras 3.16 keeps but also leaves in
    the shared call context, so every layer called after the backbone (the head's ``Dropout``
    and ``BatchNormalization``) runs in inference mode too.
    Checked (tests/test_bn_policy.py): Keras 3.13.0, 3.15.1 and keras-nightly
    3.16.0.dev2026102704 on TensorFlow; 3.15.1 on JAX and PyTorch.
    """
    if not hasattr(layer, "_call_context_args"):
        return  # not a Layer (an operation in a functional graph)
    names = set(layer._call_context_args)
    wanted = names | {"training"} if follows else names - {"training"}
    if wanted != names:
        layer._call_context_args = wanted


def compile_arguments(model) -> dict:
    """The arguments ``model.compile`` was called with, as the objects passed (loss functions,
    metric objects), for compiling a second model that trains the same way.

    Why: ``Model._compile_config.config`` keeps the arguments themselves. Public alternative:
    ``model.get_compile_config()``, which returns them serialized; deserializing re-creates each
    object and fails for a loss or metric that is a plain function not registered with
    ``keras.saving.register_keras_serializable``, which ``compile`` itself accepts.
    Checked: Keras 3.15.1.
    """
    return dict(model._compile_config.config)


def print_msg(message: str) -> None:
    """Print a line as Keras's own callbacks do.

    Why: ``keras.src.utils.io_utils.print_msg`` sends the line to absl logging when
    ``keras.config.disable_interactive_logging()`` is in force, as ``EarlyStopping`` and
    ``ReduceLROnPlateau`` messages go. Public alternative: ``print`` (ignores that setting).
    Checked: Keras 3.15.1.
    """
    try:
        from keras.src.utils import io_utils
    except ImportError:  # pragma: no cover - a Keras that moved it
        print(message)
        return
    io_utils.print_msg(message)


def monitor_mode(callback) -> str:
    """``"min"`` or ``"max"``: the direction in which ``callback`` (a Keras ``MonitorCallback``
    such as ``EarlyStopping``, its model set, in ``fit``) counts its metric as improving.

    Why: ``MonitorCallback._set_monitor_op`` resolves ``mode="auto"`` into ``monitor_op`` from
    the direction of the compiled metric of that name (and raises when it cannot tell); a
    subclass that compares values itself (to count non-finite values as no improvement) needs
    that same direction. Public alternative: none (``callback.mode`` stays ``"auto"``).
    Checked: Keras 3.15.1.
    """
    if callback.mode in ("min", "max"):
        return callback.mode
    if callback.monitor_op is None:
        callback._set_monitor_op()
    from keras import ops

    return "min" if callback.monitor_op is ops.less else "max"


def saved_variable_shapes(path) -> tuple[list, list] | None:
    """``(layer variable shapes, optimizer variable shapes)`` saved in the ``.keras`` file
    ``path``, the optimizer's in their saved order; ``None`` when the file keeps its variables
    in another form than ``model.weights.h5``. Raises what ``zipfile``/``h5py`` raise for a
    file that is no ``.keras`` archive (missing, truncated, garbage).

    Why: checking that a file fits a model before ``Model.load_weights`` touches a weight (it
    assigns layer by layer and raises part way, or skips a mismatched optimizer with a warning)
    needs the file's layout: Keras's archive holds ``model.weights.h5``, whose datasets are
    ``layers/.../vars/N`` and ``optimizer/vars/N`` (``saving_lib._VARS_FNAME_H5`` and the
    ``H5IOStore`` layout). Public alternative: ``keras.saving.load_model(path, compile=False)``,
    which builds the whole saved model and does not give the optimizer's variables.
    Checked: Keras 3.13.0 and 3.15.1.
    """
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            return None
        layers, optimizer = [], {}
        with archive.open("model.weights.h5") as member, h5py.File(member, "r") as store:
            def visit(name, item):
                if not isinstance(item, h5py.Dataset):
                    return
                parts = name.split("/")
                if parts[:2] == ["optimizer", "vars"] and len(parts) == 3:
                    optimizer[int(parts[2])] = tuple(item.shape)
                elif parts[0] != "optimizer":
                    layers.append(tuple(item.shape))

            store.visititems(visit)
    return layers, [optimizer[i] for i in sorted(optimizer)]


# ---------------------------------------------------------------------------------------------
# Optimizers. keras-tlft builds one optimizer for every variable a schedule can unfreeze and
# trains a changing subset of them, each at its own learning rate (keras_tlft.optim). Keras's
# optimizers have no public API for either: an optimizer is built once, for the variables of its
# first apply(), and trains every one of them at one learning rate.


def var_key(optimizer, variable):
    """The key under which ``optimizer`` indexes ``variable``'s state.

    Why: ``BaseOptimizer._var_key`` is ``id(variable)``, but the TensorFlow optimizer keys a
    distributed variable by its container; per-variable rules must use the same key.
    Public alternative: none. Checked: Keras 3.15.1.
    """
    return optimizer._var_key(variable)


def built_variables(optimizer) -> list:
    """The variables ``optimizer`` was built for, in its order.

    Why: ``BaseOptimizer._trainable_variables``; the public ``optimizer.variables`` lists the
    optimizer's own state (moments, iterations), not the model variables it updates.
    Public alternative: none. Checked: Keras 3.15.1.
    """
    return list(optimizer._trainable_variables)


def is_built_for(optimizer, variables) -> bool:
    """Whether ``optimizer`` is built for exactly ``variables`` (in any order).

    Why: reads ``_trainable_variables_indices``, Keras's own index of the built variables.
    Public alternative: none (``optimizer.built`` says only that it was built).
    Checked: Keras 3.15.1.
    """
    known = optimizer._trainable_variables_indices
    return (
        optimizer.built
        and len(known) == len(variables)
        and all(var_key(optimizer, v) in known for v in variables)
    )


def _not_tracked():
    # Assigning lists of variables to an optimizer attribute would track them as the optimizer's
    # own variables; Keras's build() turns tracking off the same way.
    from keras.src.utils.tracking import DotNotTrackScope

    return DotNotTrackScope()


def unbuild(optimizer, keep: int) -> None:
    """Forget what ``optimizer`` was built for, dropping every state variable after the first
    ``keep`` (those its constructor made: iterations, learning rate), so that ``build`` runs again.

    Why: Keras builds an optimizer once; ``build`` refuses nothing but appends to the private
    ``_variables``, ``_trainable_variables`` and ``_trainable_variables_indices``.
    Public alternative: a new optimizer (loses the user's object, its state and its config).
    Checked: Keras 3.15.1.
    """
    with _not_tracked():
        del optimizer._variables[keep:]
        optimizer._trainable_variables_indices = {}
        optimizer._trainable_variables = []
        optimizer.built = False


def append_variables(optimizer, variables) -> None:
    """Add ``variables`` (already tracked by it) back at the end of ``optimizer.variables``.

    Why: ``optimizer.variables`` is a copy of the private ``_variables`` list; state variables
    that must outlive a rebuild are kept by appending them to it.
    Public alternative: none. Checked: Keras 3.15.1.
    """
    optimizer._variables.extend(variables)


def set_built_for(optimizer, variables) -> None:
    """Make a wrapping optimizer (``LossScaleOptimizer``) agree with its inner optimizer about
    the variables it is built for.

    Why: the wrapper keeps its own copy of ``_trainable_variables`` and its index.
    Public alternative: none. Checked: Keras 3.15.1.
    """
    with _not_tracked():
        optimizer._trainable_variables = list(variables)
        optimizer._trainable_variables_indices = {
            var_key(optimizer, v): i for i, v in enumerate(variables)
        }


def learning_rate_variable(optimizer):
    """``optimizer``'s learning-rate variable, or ``None`` when it follows a schedule.

    Why: ``BaseOptimizer._learning_rate``; ``optimizer.learning_rate`` returns its current value
    (a schedule's too), not the variable. Public alternative: none. Checked: Keras 3.15.1.
    """
    return getattr(optimizer, "_learning_rate", None)


def nadam_product(optimizer):
    """Nadam's running product of momentum factors (``None`` for other optimizers).

    Why: ``Nadam._u_product`` advances once per update call; an update split into groups must
    replay it from the same start. Public alternative: none. Checked: Keras 3.15.1.
    """
    return getattr(optimizer, "_u_product", None)


def adam_moments(optimizer, variable) -> tuple:
    """Adam's first and second moments of ``variable``.

    Why: ``Adam._momentums`` and ``_velocities``, indexed by ``_get_variable_index``; the public
    ``optimizer.variables`` lists them unlabelled. Public alternative: none.
    Checked: Keras 3.13.0, 3.15.1, 3.16 nightly.
    """
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


def tf_handle(variable):
    """The TensorFlow resource handle of a Keras variable (TensorFlow backend).

    Why: a raw op (``ResourceApplyAdam``) takes the handle; Keras's TensorFlow ``Variable``
    exposes it as ``handle``, undocumented. Public alternative: none.
    Checked: Keras 3.13.0, 3.15.1, 3.16 nightly.
    """
    return variable.handle


# The optimizer methods keras_tlft.optim wraps, by meaning. update_step and
# finalize_variable_values are public; the others are Keras's private steps of apply():
#   current_learning_rate: _get_current_learning_rate, the rate handed to update_step (and to
#       weight decay); wrapped to apply a block's rate inside weight decay.
#   apply_weight_decay: _apply_weight_decay, decoupled weight decay (AdamW, Lion...), which
#       scales by the learning rate and so must see each block's rate.
#   apply_step: _backend_update_step, one step over every variable: the scope of a cache.
#   fused_update_step: _parallel_update_step, PyTorch's fused update of every variable at one
#       learning rate, called once per group of variables sharing a rate (absent elsewhere).
# Public alternative: none; a subclass cannot be swapped into the user's optimizer object.
# Checked: Keras 3.15.1 (TensorFlow, JAX and PyTorch backends).
_OPTIMIZER_METHODS = {
    "update_step": "update_step",
    "finalize_variable_values": "finalize_variable_values",
    "current_learning_rate": "_get_current_learning_rate",
    "apply_weight_decay": "_apply_weight_decay",
    "apply_step": "_backend_update_step",
    "fused_update_step": "_parallel_update_step",
}


def wrap_optimizer_methods(optimizer, **wrappers) -> None:
    """Replace methods of one optimizer instance (never its class) by ``wrapper(original)``.

    ``wrappers`` are keyed by the meanings above; a method this optimizer does not have (the
    fused step outside PyTorch) is left alone.
    """
    for meaning, wrap in wrappers.items():
        name = _OPTIMIZER_METHODS[meaning]
        if hasattr(optimizer, name):
            setattr(optimizer, name, wrap(getattr(optimizer, name)))


# JAX's fit loop. compile_ahead.py installs a train step compiled ahead of its stage; Keras's JAX
# trainer has no public hook for that: ``make_train_function`` builds only its own step.


def jax_state_layout(model) -> tuple:
    """The shapes and dtypes of the state Keras's JAX ``fit`` passes its train step, as
    ``jax.ShapeDtypeStruct`` lists: ``(trainable, non-trainable, optimizer, metrics)`` variables,
    under the current ``trainable`` flags.

    Why: ``JAXTrainer._get_jax_state`` builds the state in this order, from these four public
    variable lists; an executable compiled for another layout refuses it before it runs.
    Public alternative: none. Checked: Keras 3.13.0, 3.15.1, 3.16.0.dev2026102704.
    """
    import jax

    def spec(variables):
        return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in variables]

    return (spec(model.trainable_variables), spec(model.non_trainable_variables),
            spec(model.optimizer.variables), spec(model.metrics_variables))


def set_jax_train_function(model, function) -> None:
    """Make ``function(state, iterator)`` the step Keras's JAX ``fit`` calls next.

    Why: the JAX ``fit`` loop calls ``self.train_function(state, iterator)`` at every step (with
    ``steps_per_execution=1`` each call takes one batch from ``iterator``) and returns
    ``(logs, state)``; ``make_train_function`` would rebuild Keras's own step instead.
    Public alternative: none. Checked: Keras 3.13.0, 3.15.1, 3.16.0.dev2026102704.
    """
    model.train_function = function


def set_tf_train_function(model, function) -> None:
    """Make ``function(iterator)`` the step Keras's TensorFlow ``fit`` calls next.

    Why: the TensorFlow ``fit`` loop calls ``self.train_function(iterator)`` at every step (with
    ``steps_per_execution=1`` each call takes one batch from ``iterator``, and a
    ``StopIteration`` or ``OutOfRangeError`` ends the epoch) and logs what it returns;
    ``make_train_function`` would rebuild Keras's own step instead.
    Public alternative: none. Checked: Keras 3.13.0, 3.15.1, 3.16.0.dev2026102704.
    """
    model.train_function = function

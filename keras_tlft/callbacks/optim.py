"""Optimizer mechanics for staged fine-tuning: the mechanism under the ProgressiveUnfreeze policy.

Keras 3 cannot change ``trainable`` in the middle of ``fit``: the optimizer was built for the
variables trainable when it was first called (TensorFlow and PyTorch then fail with "Unknown
variable"), and on JAX the compiled step's state is positional. :class:`StagedOptimizer` fixes both
once, without replacing the user's optimizer:

- it builds the optimizer for the *union* of every variable a schedule can ever train, keeping the
  state it already had, so its variable list never changes again between stages (weight
  checkpoints and ``BackupAndRestore`` keep one layout, and restore it exactly);
- it lets the optimizer update any subset of those variables (on JAX, ``stateless_apply`` is
  taught to map the subset);
- it applies a :class:`LearningRateRule` per variable, in the compiled step, as a true learning
  rate: the rule multiplies the ``learning_rate`` handed to ``update_step`` (or to PyTorch's fused
  ``_parallel_update_step`` per group), so Adam-like optimizers see a real learning rate, not
  scaled gradients, and learning-rate schedules keep working.

A stage change then only sets ``trainable`` flags and calls :func:`retrace`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

from keras_tlft import _keras_compat as compat
from keras_tlft.callbacks.fused_adam import fused_adam
from keras_tlft.callbacks.optimizer_state import (
    count_init_variables,
    restore_by_name,
    values_by_name,
)
from keras_tlft.schedules.lr_rules import LearningRateRule

__all__ = [
    "LearningRateRule",
    "StagedOptimizer",
    "innermost_optimizer",
    "retrace",
]


def innermost_optimizer(optimizer):
    """The optimizer that holds the per-variable state (unwraps ``LossScaleOptimizer``)."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def retrace(model) -> None:
    """Rebuild ``model``'s train function so that the next step is traced for the current
    ``trainable`` flags (one retrace or recompile, on every backend)."""
    model.make_train_function(force=True)


def _strategy_scope(model):
    import contextlib

    import keras

    if keras.backend.backend() == "tensorflow":
        return model.distribute_strategy.scope()
    return contextlib.nullcontext()


class StagedOptimizer:
    """Teaches one compiled Keras optimizer to train a changing subset of a fixed set of variables,
    each at its own learning rate.

    Installed once per optimizer (:meth:`install` returns the existing instance on a second call),
    by patching the instance, never the class: the user's optimizer object stays ``model.optimizer``
    and keeps its config, its learning-rate schedule and its state.

    Args:
        model: the compiled model whose ``optimizer`` is taught.
    """

    def __init__(self, model):
        import keras

        optimizer = model.optimizer
        if optimizer is None:
            raise ValueError(
                "The model has no optimizer: compile it before fitting with ProgressiveUnfreeze. "
                f"Received: model.optimizer={optimizer!r}"
            )
        self.model = model
        self.optimizer = optimizer
        self.inner = innermost_optimizer(optimizer)
        multi = getattr(keras.optimizers, "MultiOptimizer", None)  # public since Keras 3.15
        if multi is not None and isinstance(self.inner, multi):
            names = ", ".join(f"{type(o).__name__}({o.name!r})" for o in self.inner.optimizers)
            raise ValueError(
                "ProgressiveUnfreeze cannot train with keras.optimizers.MultiOptimizer: each "
                "sub-optimizer is built for its own fixed variables, so the blocks a stage "
                "unfreezes would reach none of them. Expected one optimizer; for per-group "
                "learning rates use ProgressiveUnfreeze's backbone_lr, backbone_lr_ratio and "
                f"block_lr_decay. Received: optimizer=MultiOptimizer([{names}])"
            )
        if keras.backend.backend() == "jax" and self.inner.use_ema:
            raise ValueError(
                "ProgressiveUnfreeze cannot train with an optimizer that uses `use_ema=True` on "
                "the JAX backend: the averages of frozen variables would need their values inside "
                "the compiled step. Use use_ema=False, or the TensorFlow or PyTorch backend. "
                f"Received: use_ema={self.inner.use_ema}"
            )
        self.rules: dict = {}
        self.masks = None  # a StageMasks: when active, its table sets the covered variables' rates
        self.state_variables: list = []
        # The ProgressiveUnfreeze that stages this optimizer (the last whose set_model saw it).
        self.owner = None
        self._patch()

    @classmethod
    def of(cls, optimizer) -> StagedOptimizer | None:
        """The :class:`StagedOptimizer` installed on ``optimizer`` (``None``: none is)."""
        inner = innermost_optimizer(optimizer) if optimizer is not None else None
        return getattr(inner, "_tlft_staged", None)

    @classmethod
    def install(cls, model) -> StagedOptimizer:
        """The :class:`StagedOptimizer` of ``model.optimizer``, installed on first use."""
        existing = cls.of(model.optimizer)
        if existing is not None:
            existing.model = model
            return existing
        return cls(model)

    # ------------------------------------------------------------------ building

    def build(self, variables: Sequence) -> bool:
        """Build the optimizer for ``variables`` (every variable it may ever update), keeping the
        state it already has for the variables it knew. Returns whether it (re)built."""
        wanted = list(variables)
        if compat.is_built_for(self.inner, wanted):
            return False
        with _strategy_scope(self.model):
            self._rebuild(wanted, keep_state=True)
        return True

    def reset_state(self) -> None:
        """Reset every per-variable state (moments, accumulators) to its initial value; the
        iteration count, the learning rate and the state variables are kept."""
        with _strategy_scope(self.model):
            self._rebuild(compat.built_variables(self.inner), keep_state=False)

    def _rebuild(self, wanted: list, keep_state: bool) -> None:
        import keras

        inner = self.inner
        n_init = count_init_variables(inner)
        own = [v for v in inner.variables[n_init:] if any(v is s for s in self.state_variables)]
        built_by_build = [v for v in inner.variables[n_init:] if not any(v is s for s in own)]
        saved = {}
        if keep_state and inner.built and int(keras.ops.convert_to_numpy(inner.iterations)):
            saved = values_by_name(built_by_build)
        compat.unbuild(inner, keep=n_init)
        # Tracking stays on in build(): Nadam's build() relies on it to track its product.
        with keras.name_scope(inner.name, caller=inner):
            inner.build(wanted)
        inner.built = True
        compat.append_variables(inner, own)
        outer = self.optimizer
        while outer is not inner:
            compat.set_built_for(outer, wanted)
            outer = outer.inner_optimizer
        skipped = restore_by_name(inner.variables[n_init:], saved) if saved else 0
        if skipped:
            warnings.warn(
                f"ProgressiveUnfreeze rebuilt optimizer {inner.name!r} for the variables the "
                f"schedule can unfreeze; the state of {skipped} optimizer variable(s) could not be "
                f"matched by name and starts afresh.",
                stacklevel=3,
            )

    def state_variable(self, name: str, shape: tuple, dtype: str, fill):
        """An optimizer-tracked variable holding training state that must survive a restart:
        saved with the optimizer by ``save_weights``, ``BackupAndRestore`` and ``.keras``."""
        import keras

        for v in self.state_variables:
            if v.name == name:
                return v
        with _strategy_scope(self.model):
            variable = self.inner.add_variable(
                shape,
                initializer=keras.initializers.Constant(fill),
                dtype=dtype,
                aggregation="only_first_replica",
                name=name,
            )
        self.state_variables.append(variable)
        return variable

    # ------------------------------------------------------------------ learning rates

    def set_rules(self, rules: Iterable[tuple[Iterable, LearningRateRule]]) -> None:
        """Set the learning-rate rule of each variable; unlisted variables train at the
        optimizer's own learning rate. Takes effect at the next :func:`retrace`."""
        self.rules = self.rule_table(rules)

    def rule_table(self, rules: Iterable[tuple[Iterable, LearningRateRule]]) -> dict:
        """What :meth:`set_rules` sets: each variable's key to its rule (identities left out)."""
        table = {}
        for variables, rule in rules:
            if rule.is_identity:
                continue
            for v in variables:
                table[compat.var_key(self.inner, v)] = rule
        return table

    def rule_for(self, variable) -> LearningRateRule | None:
        if self.masks is not None and self.masks.covers(variable):
            return self.masks.rule(variable)
        return self.rules.get(compat.var_key(self.inner, variable))

    def learning_rate_of(self, variable) -> float:
        """The learning rate ``variable`` trains at now (plain Python, for logs)."""
        import keras

        inner = self.inner
        lr = float(keras.ops.convert_to_numpy(inner.learning_rate))
        rule = self.rule_for(variable)
        if rule is None:
            return lr
        return rule.value(lr, int(keras.ops.convert_to_numpy(inner.iterations)))

    # ------------------------------------------------------------------ patches

    def _patch(self) -> None:
        import keras

        inner = self.inner
        inner._tlft_staged = self
        self._lr_override: Callable | None = None
        self._rule_tensors: dict | None = None
        compat.wrap_optimizer_methods(
            inner,
            update_step=self._wrap_update_step,
            current_learning_rate=self._wrap_current_learning_rate,
            apply_weight_decay=self._wrap_apply_weight_decay,
            finalize_variable_values=self._wrap_finalize,
            apply_step=self._wrap_apply_step,
            fused_update_step=self._grouped,
        )
        if keras.backend.backend() == "jax":
            inner.stateless_apply = self._subset_stateless_apply

    def _wrap_update_step(self, update_step):
        fused = fused_adam(self.inner, self._per_step)  # Adam on TensorFlow: one op a variable

        def patched_update_step(gradient, variable, learning_rate):
            rule = self.rule_for(variable)
            if rule is not None:
                learning_rate = self._rule_tensor(rule, learning_rate)
                if hasattr(rule, "mask_factor"):
                    gradient = gradient * self._mask_factor(rule, gradient.dtype)
            if fused is not None and fused(gradient, variable, learning_rate):
                return None
            return update_step(gradient, variable, learning_rate)

        return patched_update_step

    def _wrap_current_learning_rate(self, get_lr):
        def patched_get_lr():
            lr = get_lr()
            return lr if self._lr_override is None else self._lr_override(lr)

        return patched_get_lr

    def _wrap_apply_weight_decay(self, apply_weight_decay):
        inner = self.inner

        def patched_apply_weight_decay(variables):
            if inner.weight_decay is None and not hasattr(inner, "adam_weight_decay"):
                return apply_weight_decay(variables)
            for rule, group in self._groups(variables):
                if rule is None:
                    apply_weight_decay(group)
                    continue
                self._lr_override = lambda lr, rule=rule: rule.tensor(lr, inner.iterations)
                try:
                    apply_weight_decay(group)
                finally:
                    self._lr_override = None

        return patched_apply_weight_decay

    def _wrap_finalize(self, finalize):
        inner = self.inner

        def patched_finalize(var_list):
            # EMA swaps in every variable it averages, which is the whole union.
            return finalize(compat.built_variables(inner) if inner.use_ema else var_list)

        return patched_finalize

    def _wrap_apply_step(self, backend_update_step):
        def patched_backend_update_step(grads, trainable_variables, learning_rate):
            # One step (or one trace of it): the scope of the learning-rate tensors' cache.
            self._rule_tensors = {}
            try:
                return backend_update_step(grads, trainable_variables, learning_rate)
            finally:
                self._rule_tensors = None

        return patched_backend_update_step

    def _rule_tensor(self, rule: LearningRateRule, learning_rate):
        return self._per_step(("rate", id(rule)), rule,
                              lambda: rule.tensor(learning_rate, self.inner.iterations))

    def _mask_factor(self, rule, dtype):
        return self._per_step(("mask", id(rule), str(dtype)), rule,
                              lambda: rule.mask_factor(dtype))

    def _per_step(self, key: tuple, rule, make):
        """``make()`` (a rule's learning rate, or its mask factor), computed once per ``key``
        within one ``_backend_update_step`` call (one step, or one trace of it): every variable
        of a block shares it, where a copy per variable made the traced step hundreds of ops
        longer. ``rule`` is held with it, so that its ``id`` stays unique."""
        cache = self._rule_tensors
        if cache is None:
            return make()
        if key not in cache:
            cache[key] = (rule, make())
        return cache[key][1]

    def _groups(self, variables):
        groups: dict = {}
        for v in variables:
            rule = self.rule_for(v)
            groups.setdefault(id(rule), (rule, []))[1].append(v)
        return list(groups.values())

    def _grouped(self, parallel_update_step):
        """PyTorch's fused optimizers update all variables in one call with one learning rate:
        call them once per group of variables that share a rule."""
        inner = self.inner

        def grouped(grads, variables, learning_rate):
            index = {id(v): i for i, v in enumerate(variables)}
            groups = self._groups(variables)
            if len(groups) == 1 and groups[0][0] is None:
                return parallel_update_step(grads, variables, learning_rate)
            # Nadam advances a shared product once per call: replay it from the same start.
            u_product = compat.nadam_product(inner)
            start = None if u_product is None else u_product.value.clone()
            for rule, group in groups:
                if start is not None:
                    u_product.assign(start)
                lr = learning_rate if rule is None else self._rule_tensor(rule, learning_rate)
                parallel_update_step([grads[index[id(v)]] for v in group], group, lr)

        return grouped

    def _subset_stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """JAX: ``stateless_apply`` for the model's *current* trainable variables, a subset of
        those the optimizer was built for."""
        import keras

        inner = self.inner
        variables = list(self.model.trainable_variables)
        if len(variables) != len(trainable_variables):
            raise ValueError(
                "Internal error: the JAX train step passed "
                f"{len(trainable_variables)} trainable values for "
                f"{len(variables)} trainable variables."
            )
        mapping = list(zip(variables, trainable_variables))
        mapping += list(zip(inner.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            inner.apply(grads, variables)
        new_trainable = [scope.get_current_value(v) for v in variables]
        new_optimizer = [scope.get_current_value(v) for v in inner.variables]
        return new_trainable, new_optimizer

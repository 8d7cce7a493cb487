"""The shared layer wrapper: run a layer with some of its weights replaced.

Every technique that changes how a layer sees its own weights (pruning masks,
fake-quantized kernels, clustered centroids) subclasses `WeightWrapper` and
implements `transform_weights`. The wrapped layer runs unchanged inside a
`keras.StatelessScope` that maps each target variable to its transformed
value, so:

- gradients flow to the stored variable through the transform (for a mask,
  exactly zero on pruned entries);
- the stored variables are never assigned, so the serving graph holds no
  `AssignVariableOp`;
- state updates the inner layer makes inside the scope (a dropout seed, a
  moving statistic) are written back after it, so nothing is dropped.
"""

import keras

from tfcompress.core import steps


class WeightWrapper(keras.layers.Wrapper):
    """Base class: a wrapper that substitutes transformed values for weights.

    Subclasses implement:

    - `target_weights()`: the inner layer's variables to transform;
    - `build_state(targets)`: create the wrapper's own variables;
    - `transform_weights(targets, training)`: a list of new values.

    Training-time updates are driven by the training step, which a callback
    binds before `fit` traces the train function (see `tfcompress.core.steps`).

    Example:

    ```python
    import keras
    from tfcompress.core import WeightWrapper

    class Halve(WeightWrapper):
        def target_weights(self):
            return [self.layer.kernel]

        def transform_weights(self, targets, training):
            return [w * 0.5 for w in targets]

    layer = Halve(keras.layers.Dense(2))
    y = layer(keras.ops.ones((1, 3)))
    ```
    """

    def __init__(self, layer, **kwargs):
        if isinstance(layer, WeightWrapper) and not self.can_wrap(layer):
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped by "
                f"{type(layer).__name__}; wrap the original layer once. To "
                "combine techniques, use a scheme that composes them."
            )
        kwargs.setdefault("name", f"{_snake(type(self).__name__)}_{layer.name}")
        super().__init__(layer, **kwargs)
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._set_targets([])
        expose_input_shape(self, layer)

    # -- to implement -------------------------------------------------------
    def can_wrap(self, wrapper):
        """Whether this wrapper may wrap another `WeightWrapper` (composition)."""
        return False

    def computing_layer(self):
        """The layer run under the substitution scope (the innermost plain layer
        when this wrapper composes another one)."""
        return self.layer

    def target_weights(self):
        raise NotImplementedError

    def build_state(self, targets):
        pass

    def transform_weights(self, targets, training):
        raise NotImplementedError

    # -- machinery ----------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if not self.layer.built:
            # Build the inner layer with its real call arguments, so that
            # layers with several inputs (MultiHeadAttention) build right.
            self.layer(*args, **kwargs)
        if getattr(self, "_call_specs", None) is None:
            object.__setattr__(self, "_call_specs", _tensor_specs(args, kwargs))
        return super().__call__(*args, **kwargs)

    def get_build_config(self):
        config = super().get_build_config()
        specs = getattr(self, "_call_specs", None)
        if config is not None and specs is not None:
            config = {**config, "call_specs": specs}
        return config

    def build_from_config(self, config):
        # A composite inner layer (keras-rs FeatureCross) may create its
        # sublayers' weights only when called: call it as it was first called.
        specs = config.get("call_specs")
        if specs is not None:
            object.__setattr__(self, "_call_specs", specs)
            if not all(sub.built for sub in self.layer._flatten_layers(recursive=True)):
                args, kwargs = _symbolic(specs)
                self.layer(*args, **kwargs)
        super().build_from_config(config)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._set_targets(self.target_weights())
        self.build_state(self._targets)
        self.built = True

    def _set_targets(self, targets):
        # Untracked: they are the inner layer's variables, and Keras would
        # otherwise save (and count) each of them a second time as ours.
        object.__setattr__(self, "_targets", list(targets))

    @property
    def targets(self):
        """The inner layer's variables this wrapper transforms."""
        return list(self._targets)

    def call(self, inputs, *args, training=None, **kwargs):
        # Keras masks travel on the tensors; the inner layer's own __call__
        # picks them up, so no `mask` argument here.
        layer = self.computing_layer()
        if layer._call_has_training_arg:
            kwargs["training"] = training
        new_values = self.transform_weights(self._targets, bool(training))
        mapping = list(zip(self._targets, new_values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = layer(inputs, *args, **kwargs)
        replaced = {id(v) for v in self._targets}
        for variable in layer.variables:
            if id(variable) in replaced:
                continue
            value = scope.get_current_value(variable)
            if value is not None:
                variable.assign(value)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def compute_mask(self, inputs, previous_mask=None):
        return self.layer.compute_mask(inputs, previous_mask)

    def training_step(self):
        """The 1-based training step for in-graph updates (see `steps`)."""
        return steps.current_step(self)

    def baked_weights(self):
        """Inner layer weights as numpy arrays, with transforms applied.

        This is what `strip` writes into a plain copy of the inner layer.
        """
        new_values = dict(
            zip(map(id, self._targets), self.transform_weights(self._targets, False))
        )
        return [
            keras.ops.convert_to_numpy(new_values.get(id(v), v))
            for v in self.layer.weights
        ]


def _tensor_specs(args, kwargs):
    """`{"args": [...], "kwargs": {...}}` of `[shape, dtype]` for tensor arguments, or None
    when a call argument is neither a tensor nor None (then it cannot be replayed)."""
    def spec(value):
        if value is None:
            return None
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError
        dtype = keras.backend.standardize_dtype(value.dtype)
        return [[None if d is None else int(d) for d in value.shape], dtype]

    try:
        return {"args": [spec(a) for a in args],
                "kwargs": {k: spec(v) for k, v in kwargs.items() if k != "training"}}
    except TypeError:
        return None


def _symbolic(specs):
    def tensor(spec):
        return None if spec is None else keras.KerasTensor(tuple(spec[0]), spec[1])

    return ([tensor(s) for s in specs["args"]],
            {k: tensor(s) for k, s in specs["kwargs"].items()})


def expose_input_shape(wrapper, layer):
    """Lets `wrapper` carry the `input_shape=` given to the layer it wraps.

    Keras 3's Sequential reads the first layer's `_input_shape_arg` to create
    its Input, so `Sequential([Wrapper(Dense(20, input_shape=(20,))), ...])`
    builds like the unwrapped model would.
    """
    shape = getattr(layer, "_input_shape_arg", None)
    if shape is not None:
        wrapper._input_shape_arg = shape


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)

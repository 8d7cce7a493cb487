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

Techniques compose as a chain: a wrapper may wrap another of a lower `order`
(pruning 10, clustering 20, quantization 30), and each transforms the values
the one inside it computes, so a pruned and quantization-aware kernel is
`fake_quant(kernel * mask)` without either technique knowing the other.
"""
import keras

from tfcompress.core import rows, steps
from tfcompress.core.clone import copy_layer


class WeightWrapper(keras.layers.Wrapper):
    """Base class: a wrapper that substitutes transformed values for weights.

    Subclasses implement:

    - `target_weights()`: the variables of `computing_layer()` to transform;
    - `build_state(targets)`: create the wrapper's own variables;
    - `transform_weights(values, training)`: new values for the targets,
      given their current values (the variables themselves, or what the
      wrapper inside this one made of them).

    And set, as class attributes:

    - `order`: the place in a chain of wrappers; a wrapper wraps only
      wrappers of a lower order (pruning 10, clustering 20, quantization 30);
    - `kept_by_strip`: True when `tfcompress.strip` keeps the wrapper (its
      state is what export needs, like fake-quant ranges); otherwise strip
      bakes its transform into a plain copy of the layer;
    - `step_driven`: True when the wrapper updates itself at training steps;
      it calls `add_step_variables()` in `build_state` and reads
      `training_step()` in `transform_weights`. A `steps.StepCallback` (such
      as `UpdatePruningStep`) binds the step before `fit` traces.

    Example:

    ```python
    import keras
    from tfcompress.core import WeightWrapper

    class Halve(WeightWrapper):
        def target_weights(self):
            return [self.computing_layer().kernel]

        def transform_weights(self, values, training):
            return [w * 0.5 for w in values]

    layer = Halve(keras.layers.Dense(2))
    y = layer(keras.ops.ones((1, 3)))
    ```
    """

    order = 0
    kept_by_strip = False
    step_driven = False

    def __init__(self, layer, **kwargs):
        if isinstance(layer, WeightWrapper) and layer.order >= self.order:
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}, "
                f"which cannot go inside {type(self).__name__}: wrappers chain "
                "in one order (pruning, then clustering, then quantization). Wrap the "
                "original layer once per technique, in that order."
            )
        kwargs.setdefault("name", f"{_snake(type(self).__name__)}_{layer.name}")
        super().__init__(layer, **kwargs)
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._set_targets([])
        expose_input_shape(self, layer)

    # -- to implement -------------------------------------------------------
    def target_weights(self):
        raise NotImplementedError

    def build_state(self, targets):
        pass

    def transform_weights(self, values, training):
        raise NotImplementedError

    @classmethod
    def link(cls, wrappers):
        """Called with every wrapper of this class in a model before `fit` traces.

        For wrappers that read one another (the layers of one channel group);
        the step callback calls it. Default: nothing.
        """

    # -- the chain ----------------------------------------------------------
    def chain(self):
        """The wrappers from this one inwards (this one first)."""
        found, layer = [], self
        while isinstance(layer, WeightWrapper):
            found.append(layer)
            layer = layer.layer
        return found

    def computing_layer(self):
        """The plain layer that runs, under the whole chain's substitutions."""
        return self.chain()[-1].layer

    def substitutions(self, training, keep=None):
        """`{id(variable): (variable, value)}` for every target of the chain.

        Wrappers apply innermost first, each to the values the previous ones
        made. `keep(wrapper)` false skips a wrapper (strip bakes only the
        wrappers it does not keep).
        """
        values = {}
        for wrapper in reversed(self.chain()):
            if keep is not None and not keep(wrapper):
                continue
            current = [values[id(v)][1] if id(v) in values else v for v in wrapper._targets]
            new = wrapper.transform_weights(current, training)
            values.update((id(v), (v, value)) for v, value in zip(wrapper._targets, new))
        return values

    # -- step protocol ------------------------------------------------------
    def add_step_variables(self, name="step"):
        """Creates the saved step counter and offset of a step-driven wrapper."""
        self._step_counter = self.add_weight(
            name=name, shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="none")
        self._step_offset = self.add_weight(
            name="step_offset", shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="none")

    def step_variable(self):
        """The last training step this wrapper ran at (saved with the model), or None."""
        return getattr(self, "_step_counter", None)

    def step_offset_variable(self):
        """Steps done before the current optimizer started counting (see `steps`)."""
        return getattr(self, "_step_offset", None)

    def training_step(self):
        """The 1-based training step for in-graph updates (see `steps`)."""
        return steps.current_step(self)

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

    def own_variables(self):
        """The variables this wrapper adds (masks, ranges, counters), not the layer's."""
        inner = {id(v) for v in self.layer.weights}
        return [v for v in self.weights if id(v) not in inner]

    #: `transform_rows(rows, ids, training)`: the rows of an Embedding table a
    #: batch reads, transformed (see `core.rows`); None: whole tables only.
    transform_rows = None

    def call(self, inputs, *args, training=None, **kwargs):
        # Keras masks travel on the tensors; the inner layer's own __call__
        # picks them up, so no `mask` argument here.
        if training and not args and not kwargs and rows.applies(self):
            # Training only: inference and export keep the whole-table graph (its
            # transformed table is a constant the converter folds, e.g. to int8).
            return rows.lookup(self, inputs, True)
        layer = self.computing_layer()
        if layer._call_has_training_arg:
            kwargs["training"] = training
        mapping = list(self.substitutions(bool(training)).values())
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = layer(inputs, *args, **kwargs)
        replaced = {id(v) for v, _ in mapping}
        # The layer's own state (BatchNorm statistics) and this wrapper's
        # (ranges a technique updates while the layer runs) leave the scope.
        for variable in self.variables:
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

    def baked_weights(self, keep=None):
        """The computing layer's weights as numpy arrays, with the chain's transforms applied.

        `keep(wrapper)` false leaves a wrapper's transform out.
        """
        values = self.substitutions(False, keep)
        return [keras.ops.convert_to_numpy(values[id(v)][1] if id(v) in values else v)
                for v in self.computing_layer().weights]

    def strip(self):
        """The layer that replaces this wrapper in a stripped model.

        Wrappers that strip (`kept_by_strip = False`) have their transforms
        baked into a plain copy of the computing layer; the kept ones wrap
        that copy again, with their state (ranges) as it is.
        """
        def baked(wrapper):
            return not wrapper.kept_by_strip

        layer = copy_layer(self.computing_layer(), weights=self.baked_weights(keep=baked))
        for wrapper in reversed(self.chain()):
            if wrapper.kept_by_strip:
                layer = wrapper.rewrap(layer)
        return layer

    def wrapper_kwargs(self):
        """The arguments that make a twin of this wrapper around another layer."""
        return {k: v for k, v in self.get_config().items() if k != "layer"}

    def rewrap(self, layer):
        """This wrapper's twin around `layer` (built, with this one's own state)."""
        new = type(self)(layer, **self.wrapper_kwargs())
        new.build_from_config(self.get_build_config())
        theirs = {v.name: v for v in self.own_variables()}
        for variable in new.own_variables():
            if variable.name in theirs:
                variable.assign(theirs[variable.name])
        return new


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


class InsertedLayer(keras.layers.Layer):
    """Base class for a layer a technique inserts into a model (a fake-quant node).

    Its variables are the technique's state, not model weights: the report
    does not count them as parameters.

    Example:

    ```python
    import keras
    from tfcompress.core.wrapper import InsertedLayer

    class Clip(InsertedLayer):
        def call(self, x):
            return keras.ops.clip(x, -1.0, 1.0)

    y = Clip()(keras.ops.ones((1, 3)))
    ```
    """

"""Ranges inside composite layers: fake-quant on the tensors a layer computes within.

TFLite runs a transformer as separate int8 kernels: the attention's
projections and both matmuls, its softmax, each step of a LayerNorm (MEAN,
SQUARED_DIFFERENCE, ADD, RSQRT, SUB, MUL), the residual adds, GELU. Each
tensor between two kernels needs a range, or the converter leaves the
kernels around it float. A `QuantizeWrapper` around a composite layer
(`MultiHeadAttention`, `LayerNormalization`, keras-hub's
`TransformerEncoder`, a user's block) gives it `InnerRanges`: while the
wrapper runs, each leaf sublayer fake-quantizes its input (unless that
tensor already has a range: this covers bare ops between sublayers, such
as `x + residual`) and its output; attention and LayerNorm compute their
internals with a range after every step. The range variables are the
wrapper's, named by the sublayer's place in the layer
(`inner<i>_<role>`), so they save and load with the model.

Bare ops chained inside a composite's `call` whose result feeds neither a
sublayer nor the layer's output keep no range: `tfcompress.export.census`
shows any float op left.
"""

import contextlib

import keras
import tensorflow as tf
from keras import ops

from tfcompress.quantization import config as C
from tfcompress.quantization import quantizers as Q

#: Attention scores are clamped at their range's minimum where masked; the
#: range spans at least this much, so a masked position's softmax weight is
#: at most exp(-16) (about 1e-7) of the largest one.
MASKED_SCORES_SPAN = 16.0


class _Range:
    """One activation range: a quantizer and its variables on the owner."""

    def __init__(self, owner, name, activation=None, quantizer=None):
        self.quantizer = quantizer or C.activation_quantizer(activation)
        self.variables = self.quantizer.build((None,), name, owner)

    def __call__(self, state, x, **kwargs):
        return state.mark(self.quantizer(x, state.training, self.variables, **kwargs))

    def frozen(self, state, x):
        """The range as it stands (no update): a second tensor on the same scale."""
        return state.mark(self.quantizer(x, False, self.variables))


class _State:
    """One call: training or not, and which tensors already carry a range."""

    def __init__(self, training):
        self.training = bool(training)
        self._ranged = set()

    def mark(self, x):
        self._ranged.add(id(x))
        return x

    def mark_all(self, structure):
        for x in keras.tree.flatten(structure):
            if _is_float_tensor(x):
                self.mark(x)

    def has_range(self, x):
        return id(x) in self._ranged


def _is_float_tensor(x):
    return hasattr(x, "dtype") and hasattr(x, "shape") and "float" in str(x.dtype)


class _Patch:
    """Replaces one method of a layer instance while the wrapper runs."""

    method = "call"

    def __init__(self, layer):
        self.layer = layer

    def install(self, state):
        self.state = state
        self.own = self.layer.__dict__.get(self.method)
        self.original = getattr(self.layer, self.method)
        object.__setattr__(self.layer, self.method, self.run)

    def remove(self):
        if self.own is None:
            object.__delattr__(self.layer, self.method)
        else:
            object.__setattr__(self.layer, self.method, self.own)
        self.state = None


class _Leaf(_Patch):
    """A sublayer without sublayers: a range on its input and on its output
    (and before its activation, where TFLite runs that as its own op)."""

    def __init__(self, layer, owner, name):
        super().__init__(layer)
        self.preserving = isinstance(layer, C.SCALE_PRESERVING)
        if self.preserving:
            return
        self.input = _Range(owner, f"{name}_input")
        self.split = C.needs_activation_split(layer) and not isinstance(layer, keras.layers.Softmax)
        if self.split:
            self.pre = _Range(owner, f"{name}_pre_activation")
        self.output = _Range(owner, f"{name}_output", C.output_activation(layer))
        # TFLite runs EinsumDense, and Dense on a sequence, as FULLY_CONNECTED,
        # RESHAPE, then the bias ADD: the product before the bias needs a range.
        self.biased = (isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))
                       and layer.bias is not None)
        if self.biased:
            self.product = _Range(owner, f"{name}_product")

    def _product_then_bias(self, inputs):
        layer = self.layer
        if isinstance(layer, keras.layers.EinsumDense):
            x = ops.einsum(layer.equation, inputs, layer.kernel)
        else:
            x = ops.matmul(inputs, layer.kernel)
        x = ops.add(self.product(self.state, x), layer.bias)
        return layer.activation(x) if layer.activation is not None else x

    def run(self, *args, **kwargs):
        state = self.state
        if self.preserving:
            outputs = self.original(*args, **kwargs)
            if args and state.has_range(args[0]) and _is_float_tensor(outputs):
                state.mark(outputs)
            return outputs
        if args and _is_float_tensor(args[0]) and not state.has_range(args[0]):
            args = (self.input(state, args[0]),) + args[1:]
        if self.split:
            activation = self.layer.activation
            object.__setattr__(self.layer, "activation",
                               lambda x: activation(self.pre(state, x)))
        try:
            if self.biased and (len(args[0].shape) > 2 or isinstance(
                    self.layer, keras.layers.EinsumDense)):
                outputs = self._product_then_bias(args[0])
            else:
                outputs = self.original(*args, **kwargs)
        finally:
            if self.split:
                object.__setattr__(self.layer, "activation", activation)
        if _is_float_tensor(outputs):
            outputs = self.output(state, outputs)
        return outputs


class _Attention(_Patch):
    """MultiHeadAttention's dot-product step (Keras' documented override point,
    `_compute_attention`) with a range after each op; the projections are
    leaves of their own."""

    method = "_compute_attention"

    def __init__(self, layer, owner, name):
        super().__init__(layer)
        self.query = _Range(owner, f"{name}_scaled_query")
        self.scores = _Range(owner, f"{name}_scores")
        self.probabilities = _Range(owner, f"{name}_softmax", "softmax")
        self.context = _Range(owner, f"{name}_context")

    def run(self, query, key, value, attention_mask=None, training=None,
            return_attention_scores=False, use_causal_mask=False):
        mha, state = self.layer, self.state
        if use_causal_mask:
            causal = mha._compute_causal_mask(query, value)
            attention_mask = causal if attention_mask is None else ops.logical_and(
                ops.cast(attention_mask, "bool"), causal)
        query = self.query(state, ops.multiply(
            query, ops.cast(mha._inverse_sqrt_key_dim, query.dtype)))
        scores = ops.einsum(mha._dot_product_equation, key, query)
        if attention_mask is None:
            scores = self.scores(state, scores)
        else:
            scores = self.scores(state, scores, min_span=MASKED_SCORES_SPAN)
            mask = ops.cast(attention_mask, "bool")
            while len(mask.shape) < len(scores.shape):
                mask = ops.expand_dims(mask, -len(mha._attention_axes) * 2 - 1)
            # Masked positions sit at the bottom of the scores' range (int8 -128).
            scores = self.scores.frozen(state, ops.where(mask, scores, -1e9))
        axis = tuple(mha._softmax.axis)
        probabilities = self.probabilities(state, ops.softmax(
            scores, axis=axis[0] if len(axis) == 1 else axis))
        if mha._dropout > 0.0:
            dropped = mha._dropout_layer(probabilities, training=training)
        else:
            dropped = probabilities
        context = self.context(state, ops.einsum(mha._combine_equation, dropped, value))
        return context, probabilities


class _Norm(_Patch):
    """LayerNormalization as the int8 kernels TFLite runs it, a range after each.

    Its ranges are the min/max over all of training (`AllValuesQuantizer`),
    not a moving average of batch extremes: per-token statistics are
    heavy-tailed, and clipping a rare token's variance mis-scales its whole
    row (on the digits encoder that cost 2 test images of 270 against the
    converter's min/max calibration).
    """

    ROLES = ("input", "mean", "squared", "variance", "variance_epsilon", "rsqrt", "centered",
             "normalized", "scaled", "output")

    def __init__(self, layer, owner, name):
        super().__init__(layer)
        self.ranges = {role: _Range(owner, f"{name}_{role}",
                                    quantizer=Q.AllValuesQuantizer(8, False, False, False))
                       for role in self.ROLES}

    def run(self, inputs):
        ln, state, r = self.layer, self.state, self.ranges
        x = inputs if state.has_range(inputs) else r["input"](state, ops.cast(inputs, "float32"))
        axes = sorted([ln.axis] if isinstance(ln.axis, int) else ln.axis)
        shape = [1] * len(x.shape)
        for axis in axes:
            shape[axis] = x.shape[axis]
        mean = r["mean"](state, ops.mean(x, axis=axes, keepdims=True))
        squared = r["squared"](state, tf.math.squared_difference(x, mean))
        variance = r["variance"](state, ops.mean(squared, axis=axes, keepdims=True))
        inverse = r["rsqrt"](state, ops.rsqrt(r["variance_epsilon"](state, variance + ln.epsilon)))
        y = x if ln.rms_scaling else r["centered"](state, x - mean)
        y = r["normalized"](state, y * inverse)
        if ln.scale:
            y = r["scaled"](state, y * ops.reshape(ln.gamma, shape))
        if ln.center and not ln.rms_scaling:
            y = r["output"](state, y + ops.reshape(ln.beta, shape))
        return ops.cast(y, ln.compute_dtype)


def _patches(layer, owner):
    found = []
    for index, sub in enumerate(layer._flatten_layers(include_self=True, recursive=True)):
        name = f"inner{index}"
        if isinstance(sub, keras.layers.MultiHeadAttention):
            found.append(_Attention(sub, owner, name))
        elif isinstance(sub, keras.layers.LayerNormalization):
            found.append(_Norm(sub, owner, name))
        elif (not isinstance(sub, keras.layers.InputLayer)
              and not sub._flatten_layers(include_self=False, recursive=False)):
            found.append(_Leaf(sub, owner, name))
    return found


class InnerRanges:
    """The ranges inside one composite layer, created on `owner` (its wrapper).

    Example:

    ```python
    import keras
    from tfcompress.quantization import QuantizeWrapper, Default8BitQuantizeConfig
    layer = QuantizeWrapper(
        keras.layers.LayerNormalization(),
        Default8BitQuantizeConfig({"#0": "per_tensor", "#1": "per_tensor"},
                                  quantize_output=False, inner_ranges=True))
    y = layer(keras.ops.ones((2, 4, 8)), training=True)  # every LayerNorm step ranged
    ```
    """

    def __init__(self, layer, owner):
        self.patches = _patches(layer, owner)
        self.output = _Range(owner, "inner_output")

    @contextlib.contextmanager
    def installed(self, training, inputs):
        """Patches the sublayers for one call; yields the call's `_State`."""
        state = _State(training)
        state.mark_all(inputs)  # the graph around gave the inputs their ranges
        for patch in self.patches:
            patch.install(state)
        try:
            yield state
        finally:
            for patch in reversed(self.patches):
                patch.remove()

    def finish(self, state, outputs):
        """A range on the layer's output, unless its last op gave it one."""
        if _is_float_tensor(outputs) and not state.has_range(outputs):
            return self.output(state, outputs)
        return outputs

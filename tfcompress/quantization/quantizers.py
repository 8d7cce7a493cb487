"""Fake-quantizers: what a float tensor looks like after an int8 round trip.

Each quantizer owns the range variables it needs (`build`) and applies
`keras.quantizers.fake_quant_with_min_max_vars`, which on the TensorFlow
backend lowers to `tf.quantization.fake_quant_with_min_max_vars[_per_channel]`
(per-channel with `axis=-1`): the ops the TFLite converter turns into real
int8 tensors, with TF's own gradients. Arguments mirror TFMOT's.
"""

import numbers

import keras
import tensorflow as tf

from tfcompress.core.nonfinite import COUNTER as NONFINITE  # skipped-batch counters


def _num_bits(value):
    """`value` as a Python int in [2, 8]; numpy integers are fine."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 2 <= value <= 8:
        raise ValueError(
            f"num_bits must be an integer in [2, 8] (the fake-quant op's limits), got {value!r}.")
    return int(value)


def _over_replicas(low, high):
    """The batch range over every replica's batch under `tf.distribute` (the global
    batch's), so that every replica and worker stores the same range; with one replica,
    the batch's own."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return low, high
    # all_reduce has no min or max: gather each replica's (low, high) and reduce them
    both = context.all_gather(tf.stack([low, high])[None], axis=0)
    return tf.reduce_min(both[:, 0], axis=0), tf.reduce_max(both[:, 1], axis=0)


class Quantizer:
    """Base class: `build(shape, name, layer)` → dict of variables; `__call__`.

    Example (a custom quantizer that clips to a fixed range):

    ```python
    import keras
    import tfcompress as tfc

    class FixedRange(tfc.quantization.Quantizer):
        def build(self, tensor_shape, name, layer):
            return {}

        def __call__(self, inputs, training, weights, **kwargs):
            return keras.quantizers.fake_quant_with_min_max_vars(inputs, -1.0, 1.0)

        def get_config(self):
            return {}
    ```
    """

    def build(self, tensor_shape, name, layer):
        raise NotImplementedError

    def __call__(self, inputs, training, weights, **kwargs):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


class _RangeQuantizer(Quantizer):
    """Shared parts: range variables, symmetric ranges, the fake-quant op."""

    def __init__(self, num_bits, per_axis, symmetric, narrow_range):
        self.num_bits = _num_bits(num_bits)
        self.per_axis = bool(per_axis)
        self.symmetric = bool(symmetric)
        self.narrow_range = bool(narrow_range)

    def _range_shape(self, tensor_shape):
        return (int(tensor_shape[-1]),) if self.per_axis else ()

    def build(self, tensor_shape, name, layer):
        shape = self._range_shape(tensor_shape)
        return {
            "min": layer.add_weight(name=f"{name}_min", shape=shape, trainable=False,
                                    initializer=keras.initializers.Constant(-6.0),
                                    aggregation="none"),
            "max": layer.add_weight(name=f"{name}_max", shape=shape, trainable=False,
                                    initializer=keras.initializers.Constant(6.0),
                                    aggregation="none"),
            # training batches whose range was NaN/Inf, and so left unchanged
            NONFINITE: layer.add_weight(name=f"{name}_{NONFINITE}", shape=(), trainable=False,
                                        initializer="zeros", aggregation="none"),
        }

    def _reduced_axes(self, inputs):
        """The axes one range spans: all but the last (per axis), or all."""
        return list(range(len(inputs.shape) - 1)) if self.per_axis else None

    def _batch_range(self, inputs):
        axes = self._reduced_axes(inputs)
        low = tf.minimum(tf.reduce_min(inputs, axis=axes), 0.0)
        high = tf.maximum(tf.reduce_max(inputs, axis=axes), 0.0)
        if self.symmetric:
            # narrow range: [-b, b]; full range: two's complement has one more
            # step below zero than above, so max = -min * (2^n - 2) / 2^n.
            ratio = -1.0 if self.narrow_range else -(2.0 ** self.num_bits - 2) / 2.0 ** self.num_bits
            return tf.minimum(low, high / ratio), tf.maximum(high, low * ratio)
        return low, high

    def _fake_quant(self, inputs, low, high):
        # float32 in, float32 out (keras would cast the output back to the input dtype)
        return keras.quantizers.fake_quant_with_min_max_vars(
            tf.cast(inputs, "float32"), low, high, num_bits=self.num_bits,
            narrow_range=self.narrow_range, axis=-1 if self.per_axis else None)

    def __call__(self, inputs, training, weights, min_span=0.0, **kwargs):
        """`min_span`: in training, widen the batch range downwards to at least this."""
        if training:
            low, high = self.track(inputs, weights, min_span)
            return self._fake_quant(inputs, low, high)
        return self._fake_quant(inputs, weights["min"].value, weights["max"].value)

    def track(self, inputs, weights, min_span=0.0):
        """Training step: the range of `inputs` (folded into the stored one), stored and returned."""
        # Ranges are statistics, not parameters: no gradient flows into
        # them (TFMOT reads them from variables). Without this, TF's
        # min/max gradients added ~4x the ops to every train step.
        batch = tf.stop_gradient(tf.cast(inputs, "float32"))
        low, high = _over_replicas(*self._batch_range(batch))
        if min_span:
            low = tf.minimum(low, high - min_span)
        # One NaN/Inf in a batch (a bad training row) must not become the
        # range: the batch is skipped and counted, the range kept.
        finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(low)),
                                tf.reduce_all(tf.math.is_finite(high)))
        next_low, next_high = self._next_range(low, high, weights, finite)
        low = tf.where(finite, next_low, weights["min"].value)
        high = tf.where(finite, next_high, weights["max"].value)
        weights["min"].assign(low)
        weights["max"].assign(high)
        weights[NONFINITE].assign_add(1.0 - tf.cast(finite, "float32"))
        return low, high

    def _next_range(self, low, high, weights, finite):
        """The range to use and store, from this batch's range and the stored one
        (used only when `finite`: the batch range has no NaN/Inf)."""
        return low, high

    def get_config(self):
        return {"num_bits": self.num_bits, "per_axis": self.per_axis,
                "symmetric": self.symmetric, "narrow_range": self.narrow_range}


@keras.saving.register_keras_serializable("tfcompress")
class LastValueQuantizer(_RangeQuantizer):
    """Range = the tensor's own min/max at the latest training step (for weights).

    Example:

    ```python
    import tfcompress as tfc
    q = tfc.quantization.LastValueQuantizer(
        num_bits=8, per_axis=True, symmetric=True, narrow_range=True)
    ```
    """


@keras.saving.register_keras_serializable("tfcompress")
class MovingAverageQuantizer(_RangeQuantizer):
    """Range = exponential moving average of batch min/max (for activations).

    The first training batch sets the range directly (TFMOT starts from
    [-6, 6], which short fine-tunes never leave); later batches move it by
    `1 - ema_decay`. Zero is always inside the range.

    Example:

    ```python
    import tfcompress as tfc
    q = tfc.quantization.MovingAverageQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
    ```
    """

    def __init__(self, num_bits, per_axis, symmetric, narrow_range, ema_decay=0.99):
        super().__init__(num_bits, per_axis, symmetric, narrow_range)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
        self.ema_decay = float(ema_decay)

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        weights["seen"] = layer.add_weight(
            name=f"{name}_seen", shape=(), trainable=False, initializer="zeros",
            aggregation="none")
        return weights

    def _next_range(self, low, high, weights, finite):
        decay = tf.where(tf.equal(weights["seen"].value, 0.0), 0.0, self.ema_decay)
        weights["seen"].assign(tf.where(finite, 1.0, weights["seen"].value))
        return (decay * weights["min"].value + (1.0 - decay) * low,
                decay * weights["max"].value + (1.0 - decay) * high)

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable("tfcompress")
class AllValuesQuantizer(_RangeQuantizer):
    """Range = min/max over every value seen in training.

    Example:

    ```python
    import tfcompress as tfc
    q = tfc.quantization.AllValuesQuantizer(
        num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
    ```
    """

    def build(self, tensor_shape, name, layer):
        weights = super().build(tensor_shape, name, layer)
        for key in ("min", "max"):
            weights[key].assign(tf.zeros_like(weights[key].value))
        return weights

    def _next_range(self, low, high, weights, finite):
        return tf.minimum(weights["min"].value, low), tf.maximum(weights["max"].value, high)


@keras.saving.register_keras_serializable("tfcompress")
class DepthwiseWeightsQuantizer(LastValueQuantizer):
    """Per-channel weights quantizer for depthwise kernels `[h, w, C, m]`.

    Channels are `C * m`, TFLite's output channels, so the kernel is viewed as
    `[h, w, 1, C * m]` for the per-channel op and reshaped back.

    Example:

    ```python
    import tfcompress as tfc
    q = tfc.quantization.DepthwiseWeightsQuantizer(8, True, True, True)
    ```
    """

    def build(self, tensor_shape, name, layer):
        h, w, c, m = tensor_shape
        return super().build((h, w, 1, c * m), name, layer)

    def __call__(self, inputs, training, weights, **kwargs):
        h, w, c, m = inputs.shape
        flat = tf.reshape(inputs, (h, w, 1, c * m))
        return tf.reshape(super().__call__(flat, training, weights), (h, w, c, m))


@keras.saving.register_keras_serializable("tfcompress")
class MatmulWeightsQuantizer(LastValueQuantizer):
    """Per-output-channel weights quantizer for `Dense` and `EinsumDense` kernels.

    TFLite runs these layers as FULLY_CONNECTED, with the kernel transposed
    to `[outputs, inputs]` and one int8 scale per output, as the converter's
    post-training path does. The converter rejects a per-channel fake-quant
    op on a kernel it transposes ("mismatched quantized axes"), so this
    quantizer rounds in plain arithmetic: in the exported graph the kernel
    folds into a float constant already on the int8 grid, and the converter
    quantizes it per output channel to the same integers. Training sees the
    same rounding, with a straight-through gradient.

    Args:
        contracted: how many leading kernel axes the layer sums over (1 for
            `Dense`; an `EinsumDense` kernel `cde` in `abc,cde->abde` has 1,
            in `abcd,cde->abe` 2). The other axes are the output channels.
        num_bits: bits per weight (symmetric, narrow range: +-(2^(n-1) - 1)).

    Example:

    ```python
    import tfcompress as tfc
    q = tfc.quantization.MatmulWeightsQuantizer(contracted=1)
    ```
    """

    def __init__(self, contracted=1, num_bits=8):
        super().__init__(num_bits, per_axis=True, symmetric=True, narrow_range=True)
        self.contracted = int(contracted)
        if self.contracted < 1:
            raise ValueError(f"contracted must be at least 1, got {contracted}.")

    def _range_shape(self, tensor_shape):
        return tuple(int(d) for d in tensor_shape[self.contracted:])

    def _reduced_axes(self, inputs):
        return list(range(self.contracted))

    def __call__(self, inputs, training, weights, **kwargs):
        x = tf.cast(inputs, "float32")
        if training:
            _, high = self.track(x, weights)
        else:
            high = weights["max"].value
        levels = 2.0 ** (self.num_bits - 1) - 1.0
        scale = tf.where(high > 0.0, high / levels, 1.0)
        rounded = tf.clip_by_value(tf.round(x / scale), -levels, levels) * scale
        return x + tf.stop_gradient(rounded - x) if training else rounded

    def get_config(self):
        return {"contracted": self.contracted, "num_bits": self.num_bits}


@keras.saving.register_keras_serializable("tfcompress")
class FixedRangeQuantizer(Quantizer):
    """A constant range, for outputs TFLite pins: sigmoid and softmax use
    `[0, 255/256]` (scale 1/256), tanh `[-1, 127/128]` (scale 1/128). Learning
    a range there would only add a requantize op after them.

    Example:

    ```python
    import tfcompress as tfc
    q = tfc.quantization.FixedRangeQuantizer(0.0, 255 / 256)
    ```
    """

    def __init__(self, min_value, max_value, num_bits=8):
        if not min_value <= 0.0 <= max_value:
            raise ValueError(f"The range must contain 0, got [{min_value}, {max_value}].")
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.num_bits = _num_bits(num_bits)

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return keras.quantizers.fake_quant_with_min_max_vars(
            tf.cast(inputs, "float32"), self.min_value, self.max_value, num_bits=self.num_bits)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value,
                "num_bits": self.num_bits}

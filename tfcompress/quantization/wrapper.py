"""Quantization-aware layers: weights and outputs pass through fake-quant."""

import keras
import tensorflow as tf

from tfcompress.core import WeightWrapper
from tfcompress.core import rows as rows_lib
from tfcompress.core.wrapper import InsertedLayer, expose_input_shape
from tfcompress.quantization.config import QuantizeConfig, activation_quantizer
from tfcompress.quantization.inner import InnerRanges
from tfcompress.quantization.quantizers import Quantizer, _RangeQuantizer


def _needs_pre(activation):
    return getattr(activation, "__name__", "") not in ("relu", "relu6", "linear")


def _deserialize(obj):
    if isinstance(obj, dict):
        return keras.saving.deserialize_keras_object(obj)
    return obj


@keras.saving.register_keras_serializable("tfcompress")
class QuantizeWrapper(WeightWrapper):
    """Runs a layer with fake-quantized weights and fake-quantizes its outputs.

    Weights are quantized through the `QuantizeConfig`'s quantizers (their
    ranges are weights of this wrapper, so they save and load with the
    model); outputs through its output quantizers. It is the last link of a
    chain of wrappers: around another technique's wrapper (a pruning one),
    the quantizer sees the values that wrapper computes (`weight * mask`),
    and since the weight quantizers are symmetric (zero maps to zero), pruned
    weights stay exactly zero in training and in the int8 TFLite weights.
    `tfcompress.strip` keeps it (its ranges are the int8 scales). With
    `preserve_sparsity=True` on a plain layer (a pruned model already
    stripped, as in TFMOT's prune-preserving QAT), the mask is the weights'
    zero pattern when the wrapper is built, and those zeros are kept the same
    way.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    layer = tfc.quantization.QuantizeWrapper(
        keras.layers.Dense(4),
        tfc.quantization.Default8BitQuantizeConfig({"kernel": "per_tensor"}))
    y = layer(keras.ops.ones((2, 3)))
    ```
    """

    quantization_aware = True
    order = 30
    kept_by_strip = True

    def __init__(self, layer, quantize_config, preserve_sparsity=False, **kwargs):
        quantize_config = _deserialize(quantize_config)
        if not isinstance(quantize_config, QuantizeConfig):
            raise ValueError(
                "quantize_config must be a tfcompress.quantization.QuantizeConfig, got "
                f"{type(quantize_config).__name__}.")
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        self.preserve_sparsity = bool(preserve_sparsity)
        self._weight_quantizers = []
        self._output_quantizers = []
        self._activation_quantizers = []
        self._inner = None

    def target_weights(self):
        pairs = self.quantize_config.get_weights_and_quantizers(self.computing_layer())
        self._weight_quantizers = [q for _, q in pairs]
        return [v for v, _ in pairs]

    def build_state(self, targets):
        layer = self.computing_layer()
        base = layer.name
        names = _range_names(layer, targets)
        self._weight_vars = [
            q.build(v.shape, name, self) for v, q, name in zip(targets, self._weight_quantizers,
                                                               names)
        ]
        # A wrapper inside this one (pruning) keeps its own zeros; a plain
        # layer keeps the zeros it has now when asked to.
        self._masks = [None] * len(targets)
        if self.preserve_sparsity and not isinstance(self.layer, WeightWrapper):
            self._masks = [self._zero_pattern(v, name) for v, name in zip(targets, names)]
        outputs = self.quantize_config.get_output_quantizers(layer)
        self._output_quantizers = list(outputs)
        self._output_vars = [q.build((None,), f"output_{i}", self) for i, q in enumerate(outputs)]
        acts = self.quantize_config.get_activations_and_quantizers(layer)
        self._activations = [a for a, _ in acts]
        self._activation_quantizers = [q for _, q in acts]
        # Like TFMOT: activations TFLite cannot fuse (tanh, sigmoid, ...) run as
        # their own op, so their input gets a (learned) range too.
        self._activation_quantizers = []
        for i, (activation, post) in enumerate(acts):
            pre = activation_quantizer() if _needs_pre(activation) else None
            self._activation_quantizers.append((
                pre, pre.build((None,), f"{base}_pre_activation_{i}", self) if pre else None,
                post, post.build((None,), f"{base}_activation_{i}", self)))
        if getattr(self.quantize_config, "inner_ranges", False):
            self._inner = InnerRanges(layer, self)
        self._row_extremes = None
        if type(layer) is keras.layers.Embedding and self.rows_supported():
            self._row_extremes = rows_lib.RowExtremes(self, names[0], targets[0])

    def _zero_pattern(self, weight, name):
        mask = self.add_weight(name=f"{name}_mask", shape=weight.shape, dtype=weight.dtype,
                               initializer="ones", trainable=False, aggregation="none")
        mask.assign(keras.ops.cast(keras.ops.not_equal(weight, 0), weight.dtype))
        return mask

    def transform_weights(self, values, training):
        out = []
        for value, q, weights, mask in zip(values, self._weight_quantizers, self._weight_vars,
                                           self._masks):
            value = value if mask is None else value * mask.value
            out.append(q(value, training, weights))
        return out

    def transform_rows(self, rows, ids, training):
        """An Embedding's gathered rows, fake-quantized with the whole table's range,
        kept from the rows training reads (`core.rows.RowExtremes`)."""
        (quantizer,), (weights,), (mask,) = self._weight_quantizers, self._weight_vars, self._masks
        if mask is not None:
            rows = rows * keras.ops.cast(tf.gather(mask.value, ids), rows.dtype)
        if training:  # the table's extremes have the table's range
            low, high = quantizer.track(
                self._row_extremes.update(self._targets[0], mask, rows, ids), weights)
        else:
            low, high = weights["min"].value, weights["max"].value
        return quantizer._fake_quant(rows, low, high)

    def rows_supported(self):
        """Row by row only for one per-tensor range over the table (the default config)."""
        quantizers = getattr(self, "_weight_quantizers", [])
        return (len(quantizers) == 1 and isinstance(quantizers[0], _RangeQuantizer)
                and not quantizers[0].per_axis and not self._activations
                and self._inner is None)

    def wrapper_kwargs(self):
        return {**super().wrapper_kwargs(), "quantize_config": self.quantize_config}

    def call(self, inputs, *args, training=None, **kwargs):
        training = bool(training)
        if self._activations:
            quantized = [self._quantized_activation(a, qs, training) for a, qs in
                         zip(self._activations, self._activation_quantizers)]
            self.quantize_config.set_quantize_activations(self.computing_layer(), quantized)
        try:
            if self._inner is None:
                outputs = super().call(inputs, *args, training=training, **kwargs)
            else:
                with self._inner.installed(training, (inputs, args, kwargs)) as state:
                    outputs = super().call(inputs, *args, training=training, **kwargs)
                outputs = self._inner.finish(state, outputs)
        finally:
            if self._activations:
                self.quantize_config.set_quantize_activations(self.computing_layer(), self._activations)
        for q, weights in zip(self._output_quantizers, self._output_vars):
            outputs = q(outputs, training, weights)
        return outputs

    @staticmethod
    def _quantized_activation(activation, quantizers, training):
        pre, pre_vars, post, post_vars = quantizers

        def quantized(x):
            if pre is not None:
                x = pre(x, training, pre_vars)
            return post(activation(x), training, post_vars)

        return quantized

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = keras.saving.serialize_keras_object(self.quantize_config)
        config["preserve_sparsity"] = self.preserve_sparsity
        return config


def _range_names(layer, targets):
    """Names for the targets' ranges that stay the same when `layer` is copied or loaded:
    the weight's name, and in a composite layer its place among the layer's weights too
    (sublayer names change with each copy)."""
    if not layer._flatten_layers(include_self=False, recursive=False):
        return [v.name for v in targets]
    index = {id(w): i for i, w in enumerate(layer.weights)}
    return [f"w{index[id(v)]}_{v.name}" for v in targets]


@keras.saving.register_keras_serializable("tfcompress")
class QuantizeLayer(InsertedLayer):
    """Fake-quantizes a tensor: model inputs, and outputs of bare ops in a graph.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    q = tfc.quantization.QuantizeLayer(
        tfc.quantization.MovingAverageQuantizer(8, False, False, False))
    y = q(keras.ops.ones((2, 3)))
    ```
    """

    quantization_aware = True

    def __init__(self, quantizer=None, **kwargs):
        super().__init__(**kwargs)
        quantizer = _deserialize(quantizer) or activation_quantizer()
        if not isinstance(quantizer, Quantizer):
            raise ValueError(f"quantizer must be a Quantizer, got {type(quantizer).__name__}.")
        self.quantizer = quantizer

    def build(self, input_shape):
        self._range_vars = self.quantizer.build(input_shape, "range", self)
        self.built = True

    def call(self, inputs, training=None):
        return self.quantizer(inputs, bool(training), self._range_vars)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(),
                "quantizer": keras.saving.serialize_keras_object(self.quantizer)}


@keras.saving.register_keras_serializable("tfcompress")
class QuantizeAnnotate(keras.layers.Wrapper):
    """Marks a layer for `quantize_apply`, optionally with its own `QuantizeConfig`.

    It computes exactly like the layer it wraps.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    layer = tfc.quantization.quantize_annotate_layer(keras.layers.Dense(4))
    ```
    """

    def __init__(self, layer, quantize_config=None, **kwargs):
        kwargs.setdefault("name", f"quant_annotate_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = _deserialize(quantize_config)
        expose_input_shape(self, layer)

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = (
            None if self.quantize_config is None
            else keras.saving.serialize_keras_object(self.quantize_config))
        return config

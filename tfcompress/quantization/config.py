"""How a layer is quantized: `QuantizeConfig`, and the default 8-bit registry.

The default 8-bit scheme (the layout the TFLite converter turns into pure
int8 kernels):
- weights: symmetric, narrow range, per output channel for convolutions
  (depthwise kernels viewed as `C * multiplier` channels), per tensor for
  Dense, EinsumDense, transposed convolutions and Embedding tables;
- activations: asymmetric, per tensor, ranges from a moving average;
- fake-quant after a layer's output, except where the converter fuses the
  output away: a convolution feeding BatchNormalization (BN is folded into
  it), and a layer feeding ReLU/ReLU6 (the activation is fused).
"""

import sys

import keras

from tfcompress.core import rules
from tfcompress.quantization import quantizers as Q

L = keras.layers


class QuantizeConfig:
    """Says how one layer is quantized (TFMOT's interface).

    Implement `get_weights_and_quantizers(layer)` → `[(variable, quantizer)]`,
    `get_activations_and_quantizers(layer)` → `[(activation_fn, quantizer)]`,
    `set_quantize_activations(layer, quantized_activations)` (assigns them back,
    e.g. `layer.activation = quantized_activations[0]`),
    `get_output_quantizers(layer)` → `[quantizer]`, and `get_config()`.
    `set_quantize_weights` is accepted but not needed: tfcompress substitutes
    the quantized values for the variables while the layer runs.

    Example (a custom layer quantized like a Dense):

    ```python
    import keras
    import tfcompress as tfc
    Q = tfc.quantization

    class MyConfig(Q.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return [(layer.w, Q.LastValueQuantizer(8, False, True, True))]

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [Q.MovingAverageQuantizer(8, False, False, False)]

        def get_config(self):
            return {}
    ```
    """

    def get_weights_and_quantizers(self, layer):
        raise NotImplementedError

    def get_activations_and_quantizers(self, layer):
        raise NotImplementedError

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def matmul_contracted(layer, variable):
    """How many leading axes of `variable` a `Dense` or `EinsumDense` in `layer` (or
    `layer` itself) sums over, when `variable` is that layer's kernel; else 0
    (also for an einsum whose summed kernel axes do not lead)."""
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if getattr(sub, "kernel", None) is not variable:
            continue
        if isinstance(sub, L.Dense):
            return 1
        if isinstance(sub, L.EinsumDense):
            operands, output = sub.equation.split("->")
            kernel = operands.split(",")[1]
            summed = sum(axis not in output for axis in kernel)
            leading = all(axis not in output for axis in kernel[:summed])
            return summed if summed and leading else 0
    return 0


def weights_quantizer(per_axis):
    return Q.LastValueQuantizer(num_bits=8, per_axis=per_axis, symmetric=True, narrow_range=True)


#: Output ranges TFLite fixes for some int8 kernels.
FIXED_RANGES = {"sigmoid": (0.0, 255 / 256), "softmax": (0.0, 255 / 256),
                "tanh": (-1.0, 127 / 128)}


def activation_quantizer(activation=None):
    """The output quantizer after `activation` (a name), learned unless TFLite fixes it."""
    if activation in FIXED_RANGES:
        return Q.FixedRangeQuantizer(*FIXED_RANGES[activation])
    return Q.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                    narrow_range=False)


def output_activation(layer):
    """Name of the function a layer ends with (for fixed-range outputs)."""
    if isinstance(layer, L.Softmax):
        return "softmax"
    return activation_name(layer)


@keras.saving.register_keras_serializable("tfcompress")
class Default8BitQuantizeConfig(QuantizeConfig):
    """The default scheme's config for one layer.

    Args:
        weights: `{weight name: "per_tensor" | "per_channel" | "depthwise"}`;
            for a composite layer, `"#<i>"` names the i-th of `layer.weights`
            (its sublayers' names change when it is copied or loaded; its
            weights' order does not).
        quantize_output: fake-quantize the layer's output.
        quantize_activation: fake-quantize before and after the layer's
            activation (for activations TFLite runs as their own op).
        inner_ranges: a composite layer: ranges on the tensors inside it
            too (see `tfcompress.quantization.inner`).

    Example:

    ```python
    import tfcompress as tfc
    config = tfc.quantization.Default8BitQuantizeConfig(
        weights={"kernel": "per_tensor"}, quantize_output=True)
    ```
    """

    def __init__(self, weights=None, quantize_output=True, quantize_activation=False,
                 inner_ranges=False):
        self.weights = dict(weights or {})
        self.quantize_activation = bool(quantize_activation)
        self.inner_ranges = bool(inner_ranges)
        bad = set(self.weights.values()) - {"per_tensor", "per_channel", "depthwise"}
        if bad:
            raise ValueError(f"Unknown weight granularity {bad}; use per_tensor, "
                             "per_channel or depthwise.")
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer):
        pairs = []
        for index, variable in enumerate(layer.weights):
            kind = self.weights.get(f"#{index}", self.weights.get(variable.name))
            if kind == "depthwise":
                pairs.append((variable, Q.DepthwiseWeightsQuantizer(8, True, True, True)))
            elif kind == "per_channel" and (contracted := matmul_contracted(layer, variable)):
                pairs.append((variable, Q.MatmulWeightsQuantizer(contracted)))
            elif kind is not None:
                pairs.append((variable, weights_quantizer(kind == "per_channel")))
        return pairs

    def get_activations_and_quantizers(self, layer):
        if self.quantize_activation:
            return [(layer.activation, activation_quantizer(output_activation(layer)))]
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        if self.quantize_activation:
            object.__setattr__(layer, "activation", quantize_activations[0])

    def get_output_quantizers(self, layer):
        return [activation_quantizer(output_activation(layer))] if self.quantize_output else []

    def get_config(self):
        return {"weights": self.weights, "quantize_output": self.quantize_output,
                "quantize_activation": self.quantize_activation,
                "inner_ranges": self.inner_ranges}


#: Layers with weights → which weights, at which granularity.
WEIGHTED = {
    # per_channel (opt-in, `MatmulWeightsQuantizer`) measured no better on the transformers
    # of scripts/bench_transformer.py, and its per-channel scales add ~7 % to the file
    L.Dense: {"kernel": "per_tensor"},
    L.EinsumDense: {"kernel": "per_tensor"},
    L.Conv1D: {"kernel": "per_tensor"},  # per-channel trips the converter on ExpandDims
    L.Conv2D: {"kernel": "per_channel"},
    L.Conv2DTranspose: {"kernel": "per_tensor"},
    L.DepthwiseConv2D: {"kernel": "depthwise"},
    L.SeparableConv2D: {"depthwise_kernel": "depthwise", "pointwise_kernel": "per_channel"},
    L.Embedding: {"embeddings": "per_tensor"},
}

#: Layers quantized inside (see `inner`), and the weights of those that have
#: no sublayers of their own.
INNER = (L.MultiHeadAttention, L.LayerNormalization)
INNER_WEIGHTS = {L.LayerNormalization: {"gamma": "per_tensor", "beta": "per_tensor"}}

#: Weightless layers (and BatchNormalization) whose output gets a fresh range.
RANGED = (
    L.ReLU, L.Activation, L.Softmax, L.LeakyReLU, L.Add, L.Subtract, L.Multiply,
    L.Average, L.Maximum, L.Minimum, L.Concatenate, L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D, L.BatchNormalization,
)

#: Layers that only move, select or drop values: the output keeps the input's
#: scale, and a fake-quant there would only add a requantize op.
SCALE_PRESERVING = (
    L.InputLayer, L.MaxPooling1D, L.MaxPooling2D, L.GlobalMaxPooling1D,
    L.AveragePooling1D, L.AveragePooling2D,  # TFLite int8 AVERAGE_POOL keeps the scale
    L.GlobalMaxPooling2D, L.Flatten, L.Reshape, L.Permute, L.Dropout,
    L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianDropout, L.AlphaDropout,
    L.ZeroPadding1D, L.ZeroPadding2D, L.Cropping1D, L.Cropping2D, L.UpSampling1D,
    L.UpSampling2D, L.Identity, L.RepeatVector,
)

#: Bare `keras.ops` nodes in a functional graph that keep their input's scale.
SCALE_PRESERVING_OPS = {
    "GetItem", "Reshape", "Transpose", "Squeeze", "ExpandDims", "Flatten", "Slice",
    "Take", "Repeat", "Tile", "Stack", "Split", "Max", "Min", "Maximum", "Minimum",
    "Identity", "Cast",
}

#: Activations TFLite fuses into the op before them.
FUSABLE_ACTIVATIONS = {"relu", "relu6"}


def activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", "linear")


def needs_activation_split(layer):
    """A weighted layer whose activation TFLite runs as a separate op (tanh,
    sigmoid, softmax, ...): its pre-activation output needs a range too."""
    return activation_name(layer) not in FUSABLE_ACTIVATIONS | {"linear"}

SUPPORTED_NAMES = sorted({c.__name__ for c in WEIGHTED} | {c.__name__ for c in RANGED}
                         | {c.__name__ for c in SCALE_PRESERVING})


def third_party_weighted():
    """Weighted layers of libraries a model may use, when they are imported:
    keras-hub's `PositionEmbedding` (its table, read by slicing) is an embedding."""
    hub = sys.modules.get("keras_hub")
    if hub is None:
        return {}
    return {hub.layers.PositionEmbedding: {"embeddings": "per_tensor"}}


def weight_spec(layer):
    """`{weight name: granularity}` for a supported weighted layer, else None."""
    return rules.lookup(layer, {**WEIGHTED, **third_party_weighted()})


def inner_weight_spec(layer):
    """`{weight name: granularity}` of a layer quantized inside (LayerNorm's gamma, beta)."""
    return rules.lookup(layer, INNER_WEIGHTS)


def is_fusable_activation(layer):
    """ReLU / ReLU6 layers that TFLite fuses into the producing op."""
    if isinstance(layer, L.ReLU):
        return layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6)
    if isinstance(layer, L.Activation):
        return getattr(layer.activation, "__name__", "") in FUSABLE_ACTIVATIONS
    return False


def kind(layer):
    """'weighted', 'ranged', 'preserving' or None (not supported)."""
    if weight_spec(layer) is not None:
        return "weighted"
    if isinstance(layer, RANGED):
        return "ranged"
    if isinstance(layer, SCALE_PRESERVING):
        return "preserving"
    return None

"""Pruning policies: which layers `prune_low_magnitude` wraps, and which models it accepts.

`PruneForLatencyOnXNNPack` prunes a model for XNNPack's sparse inference
(float32/float16 CPU kernels that skip zero weights in 1x1 convolutions,
https://arxiv.org/abs/1911.09723). XNNPack runs a subgraph sparsely only
when it starts with a stride-2 3x3 convolution over a 3-channel image, ends
in a global average pooling, and holds only ops it can run in its sparse
(channels-first) layout in between. The policy checks that before any layer
is wrapped, and then prunes only the 1x1 Conv2D layers: the ones whose zeros
XNNPack skips.
"""

import keras

from tfcompress.core import Graph, WeightWrapper, is_graph_model

L = keras.layers


class PruningPolicy:
    """Base class: decides which layers of a model `prune_low_magnitude` wraps.

    A policy answers two questions. `ensure_model_supports_pruning(model)`
    raises a `ValueError` when the model as a whole does not suit the policy;
    it runs once, before any layer is wrapped. `allow_pruning(layer)` says
    whether one layer gets a `PruneLowMagnitude` wrapper; the other layers are
    copied as they are. A policy needs a whole model, so `prune_low_magnitude`
    accepts `pruning_policy=` only with a Sequential or functional model.

    Example: prune the Dense layers only.

    ```python
    import keras
    import tfcompress as tfc

    class DenseOnly(tfc.pruning.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

        def ensure_model_supports_pruning(self, model):
            pass

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    pruned = tfc.pruning.prune_low_magnitude(model, pruning_policy=DenseOnly())
    assert isinstance(pruned.layers[-1], tfc.pruning.PruneLowMagnitude)
    assert not isinstance(pruned.layers[0], tfc.pruning.PruneLowMagnitude)
    ```
    """

    def allow_pruning(self, layer):
        """True when `layer` should be wrapped for pruning."""
        raise NotImplementedError(f"{type(self).__name__} must implement allow_pruning(layer).")

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` when `model` does not suit this policy."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement ensure_model_supports_pruning(model).")


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 Conv2D layers, in a model XNNPack can run sparsely.

    TFMOT's policy, for Keras 3. Before wrapping anything it checks the
    model's structure against XNNPack's rules for sparse inference:

    - every input branch starts with `ZeroPadding2D(1)` followed by a
      `Conv2D` with a 3x3 kernel over 3 input channels, `strides=2` and
      `padding="valid"`;
    - every output branch ends in a `GlobalAveragePooling2D`;
    - between the two there are only layers XNNPack runs in its sparse
      layout: 1x1 stride-1 `Conv2D` (no dilation, one group), 3x3 or 5x5
      `DepthwiseConv2D` (stride 1 with `padding="same"`, or stride 1 or 2
      with `padding="valid"` after a matching `ZeroPadding2D`),
      `BatchNormalization` on the channels, `ReLU`, `LeakyReLU`, `ELU`,
      `Activation` relu/relu6/leaky_relu/elu/sigmoid, `Add`, `Multiply`,
      `ZeroPadding2D`, `Dropout`, bilinear `UpSampling2D`,
      `GlobalAveragePooling2D(keepdims=True)` (squeeze-and-excite) and bare
      `+`, `-`, `*` between tensors.

    A model that breaks a rule raises a `ValueError` that names the rule (and
    the layer). Then every 1x1 `Conv2D` is pruned, as in TFMOT, including a
    1x1 classifier after the pooling; keep one dense with
    `weight_names={"its_name": []}`. Everything else stays dense.

    Export the stripped model with `to_tflite(model, sparse=True)` in float32
    or float16: XNNPack's sparse kernels are floating point only.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    L = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2, padding="valid"), L.ReLU(),
        L.DepthwiseConv2D(3, padding="same"), L.ReLU(),
        L.Conv2D(16, 1), L.ReLU(),
        L.GlobalAveragePooling2D(), L.Dense(10),
    ])
    pruned = tfc.pruning.prune_low_magnitude(
        model, pruning_schedule=tfc.pruning.ConstantSparsity(0.8, 0),
        pruning_policy=tfc.pruning.PruneForLatencyOnXNNPack())
    wrapped = [l.layer.name for l in pruned.layers
               if isinstance(l, tfc.pruning.PruneLowMagnitude)]
    assert len(wrapped) == 1   # the 1x1 Conv2D
    ```
    """

    def allow_pruning(self, layer):
        """True for a `Conv2D` with a 1x1 kernel."""
        return isinstance(layer, L.Conv2D) and tuple(layer.kernel_size) == (1, 1)

    def ensure_model_supports_pruning(self, model):
        """Raises `ValueError` unless `model` can run sparsely in XNNPack (see the class)."""
        name = type(self).__name__
        if not isinstance(model, keras.Model) or not is_graph_model(model):
            raise ValueError(
                f"{name} checks the layer graph of a Sequential or functional model; "
                f"{type(model).__name__} is not one. Build the model as functional or "
                "Sequential, or prune without pruning_policy."
            )
        if not model.built or not model.inputs:
            raise ValueError(
                f"Model '{model.name}' is not built, so {name} cannot follow its layer "
                "graph. Give it an input first, e.g. keras.Input((224, 224, 3)) as its "
                "first layer, or call model.build((None, 224, 224, 3))."
            )
        graph = Graph(model)
        starts = set()
        for key in graph.inputs:
            found, dead_end = graph.walk(graph.consumers_of_key(key),
                                         lambda call: _is_stem(graph, call), graph.consumers)
            if dead_end or not found:
                raise ValueError(
                    f"{name}: model input '{graph.names[key]}' does not reach the "
                    "stem XNNPack's sparse inference starts from: ZeroPadding2D(1) then "
                    "Conv2D(filters, 3, strides=2, padding='valid') over 3 input channels. "
                    "Start every image branch with `x = keras.layers.ZeroPadding2D(1)(x)` and "
                    "`x = keras.layers.Conv2D(filters, 3, strides=2, padding='valid')(x)`, "
                    "or prune without pruning_policy."
                )
            starts |= found
        ends = set()
        for key in graph.outputs:
            producer = graph.producer.get(key)
            found, dead_end = graph.walk([producer] if producer else [],
                                         _is_end, graph.producers)
            if dead_end or not found:
                raise ValueError(
                    f"{name}: model output '{graph.names[key]}' is not computed from "
                    "a GlobalAveragePooling2D, where XNNPack's sparse inference ends. Pool "
                    "the last feature map with keras.layers.GlobalAveragePooling2D() "
                    "before the classifier, or prune without pruning_policy."
                )
            ends |= found

        def check(call):
            if call in ends:
                return True
            problem = _unsupported(graph, call)
            if problem:
                raise ValueError(
                    f"Layer {_describe(call.op)} is not supported for the {name} pruning "
                    f"policy: between the stem and the final GlobalAveragePooling2D, "
                    f"XNNPack's sparse inference {problem} It runs that part sparsely only "
                    "when it supports every layer in it (see "
                    "help(tfcompress.pruning.PruneForLatencyOnXNNPack)). Change or move "
                    "that layer, or prune without pruning_policy."
                )
            return False

        graph.walk([c for s in starts for c in graph.consumers(s)], check, graph.consumers)


# -- the rules -----------------------------------------------------------------


def _base(op):
    while isinstance(op, WeightWrapper):
        op = op.layer
    return op


def _is_stem(graph, call):
    layer = _base(call.op)
    if not isinstance(layer, L.Conv2D) or not layer.built:
        return False
    producers = graph.producers(call)
    return (tuple(layer.kernel.shape[:3]) == (3, 3, 3)
            and tuple(layer.strides) == (2, 2)
            and layer.padding.lower() == "valid"
            and len(producers) == 1
            and _padding_of(producers[0]) == ((1, 1), (1, 1)))


def _is_end(call):
    return isinstance(_base(call.op), L.GlobalAveragePooling2D)


def _padding_of(call):
    layer = _base(call.op)
    if not isinstance(layer, L.ZeroPadding2D):
        return None
    return tuple(tuple(int(p) for p in side) for side in layer.padding)


_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
_ELEMENTWISE = (L.Add, L.Multiply, L.ZeroPadding2D, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout)
_BARE_OPS = ("Add", "Subtract", "Multiply")


def _unsupported(graph, call):
    """Why XNNPack cannot run `call` in its sparse subgraph ('' when it can)."""
    layer = _base(call.op)
    if not isinstance(layer, L.Layer):
        if type(layer).__name__ in _BARE_OPS:
            return ""
        return "takes only the bare keras.ops calls x + y, x - y and x * y."
    if isinstance(layer, _ELEMENTWISE):
        return ""
    if isinstance(layer, L.DepthwiseConv2D):
        return _depthwise_problem(graph, call, layer)
    if isinstance(layer, L.Conv2D):
        if (tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1)
                and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1):
            return ""
        return ("takes only 1x1 Conv2D with strides=1, no dilation and groups=1 "
                "(besides the stem).")
    if isinstance(layer, L.GlobalAveragePooling2D):
        return "" if layer.keepdims else (
            "needs keepdims=True on a GlobalAveragePooling2D before the last one.")
    if isinstance(layer, L.BatchNormalization):
        return "" if layer.axis in (-1, 3) else (
            "takes BatchNormalization over the channels (axis=-1) only.")
    if isinstance(layer, L.UpSampling2D):
        return "" if layer.interpolation == "bilinear" else (
            "takes UpSampling2D(interpolation='bilinear') only.")
    if isinstance(layer, L.Activation):
        activation = keras.activations.serialize(layer.activation)
        activation = activation if isinstance(activation, str) else str(activation)
        return "" if activation in _ACTIVATIONS else (
            f"takes the activations {', '.join(_ACTIVATIONS)} only.")
    return "has no kernel for it."


def _depthwise_problem(graph, call, layer):
    size, strides = tuple(layer.kernel_size), tuple(layer.strides)
    producers = graph.producers(call)
    padded = _padding_of(producers[0]) if len(producers) == 1 else None
    side = {(3, 3): 1, (5, 5): 2}.get(size)
    same = strides == (1, 1) and layer.padding.lower() == "same"
    valid = (strides in ((1, 1), (2, 2)) and layer.padding.lower() == "valid"
             and side is not None and padded == ((side, side), (side, side)))
    if (side is not None and layer.depth_multiplier == 1
            and tuple(layer.dilation_rate) == (1, 1) and (same or valid)):
        return ""
    return ("takes only 3x3 or 5x5 DepthwiseConv2D with depth_multiplier=1 and no "
            "dilation, either with strides=1 and padding='same', or with strides 1 or 2 "
            "and padding='valid' right after ZeroPadding2D(1) (3x3) or ZeroPadding2D(2) "
            "(5x5).")


def _describe(op):
    layer = _base(op)
    name = getattr(layer, "name", None)
    kind = type(layer).__name__
    return f"'{name}' ({kind})" if name else kind


# -- the layer graph -------------------------------------------------------------

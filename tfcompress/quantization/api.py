"""prepare → fit → export: turning a Keras 3 model into a quantization-aware one."""

import warnings

import keras

from tfcompress.core import copy_layer, is_graph_model, map_layers, steps
from tfcompress.pruning.wrapper import PruneLowMagnitude
from tfcompress.quantization import config as C
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeLayer, QuantizeWrapper


class Default8BitQuantizeScheme:
    """The default scheme: int8 weights (per channel for convs) and activations.

    A model still carrying pruning wrappers is refused: quantizing would let
    pruned zeros drift. Strip it first, or use
    `Default8BitPrunePreserveQuantizeScheme`.

    Example:

    ```python
    import tfcompress as tfc
    scheme = tfc.quantization.Default8BitQuantizeScheme()
    ```
    """

    preserve_sparsity = False


class Default8BitPrunePreserveQuantizeScheme(Default8BitQuantizeScheme):
    """The default scheme, keeping pruned weights exactly zero.

    Pruning wrappers stay in the model (a model still pruning keeps pruning);
    weights are quantized as `fake_quant(weight * mask)`, and symmetric
    quantization maps zero to zero, so the int8 TFLite weights keep every zero.
    A model already stripped (TFMOT's flow: prune, `strip_pruning`, then
    quantize with this scheme) keeps the zeros it has when quantized: each
    weight's mask is its zero pattern at that moment.

    Example:

    ```python
    import tfcompress as tfc
    scheme = tfc.quantization.Default8BitPrunePreserveQuantizeScheme()
    ```
    """

    preserve_sparsity = True


def quantize_annotate_layer(to_annotate, quantize_config=None):
    """Marks a layer to be quantized by `quantize_apply` (TFMOT's function).

    Pass a `QuantizeConfig` for layers the default scheme does not know.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    layer = tfc.quantization.quantize_annotate_layer(keras.layers.Dense(3))
    ```
    """
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise ValueError("quantize_annotate_layer takes a keras Layer; for a model use "
                         f"quantize_annotate_model. Got {type(to_annotate).__name__}.")
    return QuantizeAnnotate(to_annotate, quantize_config=quantize_config)


def quantize_annotate_model(to_annotate):
    """Marks every layer of a Sequential/functional model for `quantize_apply`.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    annotated = tfc.quantization.quantize_annotate_model(model)
    ```
    """
    _check_model(to_annotate)

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return copy_layer(layer)
        if isinstance(layer, QuantizeAnnotate):
            # Copied part by part: a config round trip of the wrapper would look
            # its (custom) layer and QuantizeConfig classes up by name, which
            # fails outside a quantize_scope.
            return QuantizeAnnotate(copy_layer(layer.layer), layer.quantize_config,
                                    name=layer.name)
        return QuantizeAnnotate(copy_layer(layer))

    return map_layers(to_annotate, annotate)


def quantize_model(to_quantize, quantized_layer_name_prefix="quant_", *, scheme=None,
                   full_integer=False):
    """Returns a quantization-aware copy of a Sequential/functional model (TFMOT's function).

    Fake-quant goes where the TFLite converter turns the model into int8
    kernels (see `tfcompress.quantization.config`). Train the result with an
    ordinary `fit`; convert it with `tf.lite.TFLiteConverter` and
    `Optimize.DEFAULT` (no representative data needed) or
    `tfcompress.export.to_tflite(model, mode="int8")`.

    Layers the scheme cannot quantize stay float with a warning naming them;
    with `full_integer=True` they are an error instead.

    Args:
        to_quantize: a Sequential or functional Keras model (built).
        quantized_layer_name_prefix: the wrappers are named
            `<prefix><layer name>`. Exported output names stay the layer's
            own either way.
        scheme: `Default8BitQuantizeScheme()` (default) or
            `Default8BitPrunePreserveQuantizeScheme()` for pruned models.
        full_integer: raise instead of leaving unsupported layers float.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.ReLU(), keras.layers.Dense(2)])
    qat = tfc.quantization.quantize_model(model)
    ```
    """
    _check_model(to_quantize)
    return quantize_apply(to_quantize, scheme, quantized_layer_name_prefix,
                          full_integer=full_integer, _annotate_all=True)


def quantize_apply(model, scheme=None, quantized_layer_name_prefix="quant_", *,
                   full_integer=False, _annotate_all=False):
    """Quantizes the annotated layers of a model (TFMOT's function).

    Layers wrapped by `quantize_annotate_layer` / `quantize_annotate_model`
    are quantized; the others stay float.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    Q = tfc.quantization
    inputs = keras.Input((4,))
    x = Q.quantize_annotate_layer(keras.layers.Dense(8))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    qat = Q.quantize_apply(model)
    ```
    """
    scheme = scheme or Default8BitQuantizeScheme()
    _check_model(model)
    if steps.find(model, QuantizeWrapper) or steps.find(model, QuantizeLayer):
        raise ValueError(
            f"Model '{model.name}' is already quantization-aware; quantize the original "
            "float model once (double quantization would stack fake-quant ops).")
    pruned = steps.find(model, PruneLowMagnitude)
    if pruned and not scheme.preserve_sparsity:
        raise ValueError(
            f"Model '{model.name}' still carries pruning wrappers ({pruned[0].name}, ...). "
            "Quantizing them with the default scheme would let pruned weights become non-zero. "
            "Either strip first (tfcompress.pruning.strip_pruning(model)), or keep the zeros with "
            "scheme=tfcompress.quantization.Default8BitPrunePreserveQuantizeScheme().")
    if not _annotate_all and not steps.find(model, QuantizeAnnotate):
        raise ValueError("quantize_apply found no annotated layer; use quantize_model, or "
                         "annotate layers with quantize_annotate_layer first.")
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    if not isinstance(quantized_layer_name_prefix, str):
        raise ValueError("quantized_layer_name_prefix must be a string, got "
                         f"{quantized_layer_name_prefix!r}.")
    return _Transform(model, _annotate_all, full_integer, scheme.preserve_sparsity,
                      quantized_layer_name_prefix).run()


def quantize_scope(*args):
    """A custom-object scope with the quantization classes (TFMOT compatibility).

    tfcompress registers its classes on import; pass your own custom classes
    (QuantizeConfigs, quantizers) as a dict to load models that use them.

    Example:

    ```python
    import tfcompress as tfc
    with tfc.quantization.quantize_scope():
        pass  # keras.saving.load_model("qat.keras")
    ```
    """
    from tfcompress.quantization import quantizers as Q

    objects = {"QuantizeWrapper": QuantizeWrapper, "QuantizeLayer": QuantizeLayer,
               "QuantizeAnnotate": QuantizeAnnotate,
               "Default8BitQuantizeConfig": C.Default8BitQuantizeConfig,
               "LastValueQuantizer": Q.LastValueQuantizer,
               "MovingAverageQuantizer": Q.MovingAverageQuantizer,
               "AllValuesQuantizer": Q.AllValuesQuantizer}
    for extra in args:
        objects.update(extra)
    return keras.saving.custom_object_scope(objects)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras Model, got {type(model).__name__}.")
    if not is_graph_model(model):
        raise ValueError(
            f"{type(model).__name__} is a subclassed model: its graph is Python code, so "
            "tfcompress cannot place fake-quant ops around its layers. Build it as a "
            "functional or Sequential model, or quantize its layers one by one with "
            "tfcompress.quantization.QuantizeWrapper(layer, config) inside your model.")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; call it on data or give it an "
                         "Input before quantizing.")


class _Transform:
    """Rebuilds a functional graph with quantized layers and fake-quant nodes."""

    def __init__(self, model, annotate_all, full_integer, preserve_sparsity, prefix):
        self.model = model
        self.prefix = prefix
        self.annotate_all = annotate_all
        self.full_integer = full_integer
        self.preserve_sparsity = preserve_sparsity
        self.consumers = {}
        self.nodes = [n for group in model._nodes_by_depth.values() for n in group]
        for node in self.nodes:
            for parent in node.parent_nodes:
                self.consumers.setdefault(id(parent.operation), []).append(node.operation)
        self.cache = {}
        self.float_layers = []

    # -- classification -------------------------------------------------------
    def _unwrap(self, op):
        """(layer to quantize, explicit config or None, selected?)"""
        if isinstance(op, QuantizeAnnotate):
            return op.layer, op.quantize_config, True
        return op, None, self.annotate_all

    def _base(self, layer):
        return layer.layer if isinstance(layer, PruneLowMagnitude) else layer

    def _kind(self, op):
        if not isinstance(op, keras.layers.Layer):
            return "preserving" if type(op).__name__ in C.SCALE_PRESERVING_OPS else "op"
        layer, explicit, selected = self._unwrap(op)
        if not selected:
            return "float"
        if explicit is not None:
            return "custom"
        return C.kind(self._base(layer)) or "unsupported"

    def _absorbs_output_of(self, consumer, producer):
        """True when `consumer` takes `producer`'s output range over (fusion)."""
        if self._kind(consumer) not in ("ranged",):
            return False
        layer = self._base(self._unwrap(consumer)[0])
        producer_layer = self._base(self._unwrap(producer)[0]) if isinstance(
            producer, keras.layers.Layer) else None
        if producer_layer is None:
            return False
        linear = getattr(getattr(producer_layer, "activation", None), "__name__", "linear") == "linear"
        if isinstance(layer, keras.layers.BatchNormalization):
            return linear and isinstance(producer_layer, (
                keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                keras.layers.SeparableConv2D))
        if C.is_fusable_activation(layer):
            return linear and (C.kind(producer_layer) == "weighted" or isinstance(
                producer_layer, (keras.layers.BatchNormalization, keras.layers.Add)))
        return False

    def _feeds_concat(self, op):
        """TFLite's int8 CONCATENATION needs one scale on all inputs and its output,
        so inputs of a Concatenate take the concat's range instead of their own."""
        return any(self._kind(c) == "ranged" and isinstance(
            self._base(self._unwrap(c)[0]), keras.layers.Concatenate)
            for c in self.consumers.get(id(op), []))

    def _quantize_output(self, op):
        consumers = self.consumers.get(id(op), [])
        if self._feeds_concat(op):
            return False
        return not (consumers and all(self._absorbs_output_of(c, op) for c in consumers))

    # -- rebuilding ----------------------------------------------------------
    def run(self):
        model = self.model
        # Named after the input layers (not the tensors, which a Sequential
        # names `keras_tensor`), so the exported signature keeps its input names.
        inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype,
                              name=x._keras_history.operation.name)
                  for x in model.inputs]
        feeds = []
        for old, new in zip(model.inputs, inputs):
            feeds.append(self._quantize_input(old, new))
        outputs = model._run_through_graph(feeds, operation_fn=self._operation_fn)
        if self.float_layers:
            names = ", ".join(sorted(set(self.float_layers)))
            message = (
                f"These layers have no quantization config and stay float: {names}. The TFLite "
                "model will dequantize around them. Supported layers: "
                f"{', '.join(C.SUPPORTED_NAMES)}. To quantize one, wrap it with "
                "quantize_annotate_layer(layer, quantize_config=YourQuantizeConfig()) and call "
                "quantize_apply.")
            if self.full_integer:
                raise ValueError(message + " (full_integer=True asked for no float layers.)")
            warnings.warn(message, stacklevel=3)
        structure = model._inputs_struct
        if isinstance(structure, dict):
            position = {id(x): i for i, x in enumerate(model.inputs)}
            inputs = {key: inputs[position[id(ref)]] for key, ref in structure.items()}
        elif not isinstance(structure, (list, tuple)):
            inputs = inputs[0]  # one input, not a list of one: called with a bare tensor
        return keras.Model(inputs, outputs, name=f"{model.name}_qat")

    def _quantize_input(self, old, new):
        if "int" in str(new.dtype) or "bool" in str(new.dtype):
            return new
        users = [node.operation for node in self.nodes
                 if node.operation is not None and not node.is_input
                 and any(t is old for t in node.input_tensors)]
        if not any(self._kind(op) not in ("float",) for op in users):
            return new
        return QuantizeLayer(name=f"quantize_{new.name}")(new)

    def _operation_fn(self, op):
        if id(op) not in self.cache:
            self.cache[id(op)] = self._make(op)
        return self.cache[id(op)]

    def _make(self, op):
        kind = self._kind(op)
        if kind == "op":
            fq = QuantizeLayer(name=f"quantize_{type(op).__name__.lower()}_{len(self.cache)}")
            return lambda *a, **k: fq(op(*a, **k))
        if kind == "preserving" and not isinstance(op, keras.layers.Layer):
            return op
        layer, explicit, _ = self._unwrap(op)
        if kind == "float":
            return copy_layer(layer)
        if kind == "unsupported":
            self.float_layers.append(f"{layer.name} ({type(self._base(layer)).__name__})")
            return copy_layer(layer)
        if kind == "preserving":
            return copy_layer(layer)
        if kind == "custom":
            return self._wrap(copy_layer(layer), explicit)
        if isinstance(layer, keras.layers.SeparableConv2D):
            return self._separable(layer, self._quantize_output(op))
        split = kind == "weighted" and C.needs_activation_split(self._base(layer))
        config = C.Default8BitQuantizeConfig(
            weights=C.weight_spec(self._base(layer)) if kind == "weighted" else None,
            quantize_output=self._quantize_output(op) and not split,
            quantize_activation=split)
        return self._wrap(copy_layer(layer), config)

    def _wrap(self, layer, config):
        return QuantizeWrapper(layer, config, preserve_sparsity=self.preserve_sparsity,
                               name=f"{self.prefix}{layer.name}")

    def _separable(self, layer, quantize_output):
        """TFLite runs SeparableConv2D as DEPTHWISE_CONV_2D then a 1x1 CONV_2D; the
        tensor between them needs a range, so the layer is split in two."""
        c = layer.get_config()
        depthwise = keras.layers.DepthwiseConv2D(
            c["kernel_size"], strides=c["strides"], padding=c["padding"],
            depth_multiplier=c["depth_multiplier"], dilation_rate=c["dilation_rate"],
            data_format=c["data_format"], use_bias=False, name=f"{layer.name}_depthwise")
        pointwise = keras.layers.Conv2D(
            c["filters"], 1, activation=c["activation"], use_bias=c["use_bias"],
            data_format=c["data_format"], name=f"{layer.name}_pointwise")
        depthwise.build(layer.input.shape)
        pointwise.build(depthwise.compute_output_shape(layer.input.shape))
        depthwise.set_weights([layer.depthwise_kernel.numpy()])
        pointwise.set_weights([layer.pointwise_kernel.numpy()]
                              + ([layer.bias.numpy()] if c["use_bias"] else []))
        split = C.needs_activation_split(pointwise)
        dw = self._wrap(depthwise, C.Default8BitQuantizeConfig({"kernel": "depthwise"}))
        pw = self._wrap(pointwise, C.Default8BitQuantizeConfig(
            {"kernel": "per_channel"}, quantize_output=quantize_output and not split,
            quantize_activation=split))
        return lambda x, **kwargs: pw(dw(x, **kwargs), **kwargs)

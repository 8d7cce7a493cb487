"""prepare → fit → export: turning a Keras 3 model into a quantization-aware one."""

import warnings

import keras

from tfcompress.core import Graph, WeightWrapper, copy_layer, find, is_graph_model, map_layers
from tfcompress.core import rewrite, rules, techniques
from tfcompress.quantization import config as C
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeLayer, QuantizeWrapper


class Default8BitQuantizeScheme:
    """The default scheme: int8 weights (per channel for convs) and activations.

    A model still carrying another technique's wrappers (pruning) is refused:
    the default scheme quantizes plain layers. Strip it first
    (`tfcompress.strip(model)`), or use `Default8BitPrunePreserveQuantizeScheme`.

    Example:

    ```python
    import tfcompress as tfc
    scheme = tfc.quantization.Default8BitQuantizeScheme()
    ```
    """

    preserve_sparsity = False
    #: Techniques whose wrappers are re-made around plain layers before quantizing.
    preserve = ()


class Default8BitPrunePreserveQuantizeScheme(Default8BitQuantizeScheme):
    """The default scheme, keeping pruned weights exactly zero.

    Other techniques' wrappers (pruning) stay in the model, inside the
    quantization wrappers (a model still pruning keeps pruning); weights are
    quantized as `fake_quant(weight * mask)`, and symmetric
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


class Default8BitClusterPreserveQuantizeScheme(Default8BitQuantizeScheme):
    """The default scheme, keeping clustered weights clustered (CQAT; PCQAT with sparsity).

    For a model clustered and stripped (TFMOT's flow: `cluster_weights`,
    `fit`, `strip_clustering`, then quantize with this scheme), each kernel's
    distinct values become trainable centroids again (the clustering
    technique's wrapper goes inside the quantization wrapper), so QAT keeps
    at most that many values per kernel and the int8 TFLite kernel at most
    that many int8 values (per channel). `preserve_sparsity=True` also keeps
    the zeros of a pruned-then-clustered model (PCQAT). Layers still wrapped
    for clustering or pruning stay wrapped inside the quantization wrappers.

    Example:

    ```python
    import tfcompress as tfc
    scheme = tfc.quantization.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    ```
    """

    preserve = ("clustering",)

    def __init__(self, preserve_sparsity=False):
        self.preserve_sparsity = bool(preserve_sparsity)


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
    if find(model, QuantizeWrapper) or find(model, QuantizeLayer):
        raise ValueError(
            f"Model '{model.name}' is already quantization-aware; quantize the original "
            "float model once (double quantization would stack fake-quant ops).")
    wrapped = [w for w in find(model, WeightWrapper) if not _quantizes_itself(w)]
    if wrapped and not (scheme.preserve_sparsity or scheme.preserve):
        raise ValueError(
            f"Model '{model.name}' still carries {type(wrapped[0]).__name__} wrappers "
            f"({wrapped[0].name}, ...). The default scheme quantizes plain layers, so pruned "
            "weights could become non-zero. Either strip first (tfcompress.strip(model)), or "
            "keep training them inside the quantization wrappers with "
            "scheme=tfcompress.quantization.Default8BitPrunePreserveQuantizeScheme().")
    if not _annotate_all and not find(model, QuantizeAnnotate):
        raise ValueError("quantize_apply found no annotated layer; use quantize_model, or "
                         "annotate layers with quantize_annotate_layer first.")
    if not isinstance(quantized_layer_name_prefix, str):
        raise ValueError("quantized_layer_name_prefix must be a string, got "
                         f"{quantized_layer_name_prefix!r}.")
    transform = _Transform(model, _annotate_all, scheme, quantized_layer_name_prefix)
    qat = transform.run()
    _warn_float(transform, full_integer)
    return qat


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


def _quantizes_itself(layer):
    """A wrapper of the quantization order that is not ours (e.g. row-wise embedding
    quantization): left as it is, its output given a range."""
    return (isinstance(layer, WeightWrapper) and not isinstance(layer, QuantizeWrapper)
            and layer.order >= QuantizeWrapper.order)


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


def _warn_float(transform, full_integer):
    """One warning naming every layer left float (an error with `full_integer=True`)."""
    message = ""
    if transform.float_layers:
        names = ", ".join(sorted(set(transform.float_layers)))
        message += (
            f"These layers have no quantization config and stay float: {names}. The TFLite "
            "model will dequantize around them. Supported layers: "
            f"{', '.join(C.SUPPORTED_NAMES)}. To quantize one, wrap it with "
            "quantize_annotate_layer(layer, quantize_config=YourQuantizeConfig()) and call "
            "quantize_apply.")
    if transform.left_float:
        shown = sorted(set(transform.left_float))
        message += (" " if message else "") + (
            "Weights inside composite layers that no quantization rule covers stay float: "
            + ", ".join(shown[:12]) + (f" and {len(shown) - 12} more" if len(shown) > 12
                                       else "") + ".")
    if not message:
        return
    if full_integer:
        raise ValueError(message + " (full_integer=True asked for no float layers.)")
    warnings.warn(message, stacklevel=3)


def _inputs(op):
    """The tensors `op` is called on in the graph (its first call)."""
    nodes = getattr(op, "_inbound_nodes", [])
    return keras.tree.flatten(nodes[0].input_tensors) if nodes else []


def _product_then_bias(layer, op):
    """EinsumDense, and Dense on a sequence: TFLite adds the bias after a RESHAPE, so the
    product needs a range of its own (`inner`)."""
    if getattr(layer, "bias", None) is None:
        return False
    if isinstance(layer, keras.layers.EinsumDense):
        return True
    inputs = _inputs(op)
    return isinstance(layer, keras.layers.Dense) and bool(inputs) and len(inputs[0].shape) > 2


def _composite_weights(layer):
    """`([(weight, granularity)], weights no rule covers)` inside a composite layer."""
    return rules.split(layer, _weight_rule, (keras.layers.BatchNormalization,))


def _weight_rule(layer):
    spec = C.weight_spec(layer) or C.inner_weight_spec(layer)
    if spec is None:
        return None
    return [(w, spec[w.name]) for w in layer.weights if w.name in spec]


class _Transform:
    """Rebuilds a functional graph with quantized layers and fake-quant nodes."""

    def __init__(self, model, annotate_all, scheme, prefix):
        self.model = model
        self.prefix = prefix
        self.annotate_all = annotate_all
        self.scheme = scheme
        self.preserve_sparsity = scheme.preserve_sparsity
        self.preservers = [techniques.preserver(name) for name in scheme.preserve]
        self.graph = Graph(model, expand_nested=False)
        self.float_layers = []
        self.left_float = []
        self.made = 0

    # -- classification -------------------------------------------------------
    def _unwrap(self, op):
        """(layer to quantize, explicit config or None, selected?)"""
        if isinstance(op, QuantizeAnnotate):
            return op.layer, op.quantize_config, True
        return op, None, self.annotate_all

    @staticmethod
    def _base(layer):
        return layer.computing_layer() if isinstance(layer, WeightWrapper) else layer

    def _kind(self, op):
        if not isinstance(op, keras.layers.Layer):
            return "preserving" if type(op).__name__ in C.SCALE_PRESERVING_OPS else "op"
        if _quantizes_itself(op):
            return "quantized"
        layer, explicit, selected = self._unwrap(op)
        if not selected:
            return "float"
        if explicit is not None:
            return "custom"
        base = self._base(layer)
        if isinstance(base, C.INNER) or _product_then_bias(base, op):
            return "composite"
        found = C.kind(base)
        if found is not None:
            return found
        if isinstance(base, keras.Model) and is_graph_model(base) and base is layer:
            return "model"
        if _composite_weights(base)[0]:
            return "composite"
        return "unsupported"

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
            for c in self.graph.consumers_of(op))

    def _quantize_output(self, op):
        consumers = self.graph.consumers_of(op)
        if self._feeds_concat(op):
            return False
        return not (consumers and all(self._absorbs_output_of(c, op) for c in consumers))

    # -- rebuilding ----------------------------------------------------------
    def run(self, name=None):
        return rewrite(self.model, self._make, input_fn=self._quantize_input,
                       name=name or f"{self.model.name}_qat")

    def _quantize_input(self, old, new):
        if "int" in str(new.dtype) or "bool" in str(new.dtype):
            return new
        if not any(self._kind(op) not in ("float",) for op in self.graph.readers_of_input(old)):
            return new
        return QuantizeLayer(name=f"quantize_{new.name}")(new)

    def _make(self, op):
        kind = self._kind(op)
        index, self.made = self.made, self.made + 1
        if kind == "op":
            fq = QuantizeLayer(name=f"quantize_{type(op).__name__.lower()}_{index}")
            return lambda *a, **k: fq(op(*a, **k))
        if kind == "quantized":  # its weights are its own business; its output gets a range
            copy, fq = copy_layer(op), QuantizeLayer(name=f"quantize_{op.name}")
            return lambda *a, **k: fq(copy(*a, **k))
        if kind == "preserving" and not isinstance(op, keras.layers.Layer):
            return op
        layer, explicit, _ = self._unwrap(op)
        if kind == "model":
            nested = _Transform(layer, self.annotate_all, self.scheme, self.prefix)
            new = nested.run(name=layer.name)
            self.float_layers += nested.float_layers
            self.left_float += nested.left_float
            return new
        if kind == "float":
            return copy_layer(layer)
        if kind == "unsupported":
            self.float_layers.append(f"{layer.name} ({type(self._base(layer)).__name__})")
            return copy_layer(layer)
        if kind == "preserving":
            return copy_layer(layer)
        if kind == "custom":
            if type(explicit) is C.Default8BitQuantizeConfig and _product_then_bias(
                    self._base(layer), op) and not explicit.inner_ranges:
                # the default config on a Dense-on-a-sequence or EinsumDense: its product
                # gets its range before the bias, as without the annotation
                explicit = C.Default8BitQuantizeConfig(explicit.weights, quantize_output=False,
                                                       inner_ranges=True)
            return self._wrap(copy_layer(layer), explicit)
        if kind == "composite":
            return self._composite(op, layer)
        if isinstance(layer, keras.layers.SeparableConv2D):
            return self._separable(layer, self._quantize_output(op))
        if isinstance(layer, (keras.layers.Add, keras.layers.Multiply)) and len(_inputs(op)) > 2:
            return self._pairwise(layer, len(_inputs(op)), self._quantize_output(op))
        split = kind == "weighted" and C.needs_activation_split(self._base(layer))
        config = C.Default8BitQuantizeConfig(
            weights=C.weight_spec(self._base(layer)) if kind == "weighted" else None,
            quantize_output=self._quantize_output(op) and not split,
            quantize_activation=split)
        return self._wrap(copy_layer(layer), config)

    def _composite(self, op, layer):
        """A composite layer: every supported sublayer's weights fake-quantized as at top
        level, and ranges on the tensors inside it (`inner`)."""
        copy = copy_layer(layer)
        base = self._base(copy)  # the copy's sublayers may be named differently
        pairs, left = _composite_weights(base)
        self.left_float += [f"{w.path} ({type(base).__name__})" for w in left]
        index = {id(w): i for i, w in enumerate(base.weights)}
        config = C.Default8BitQuantizeConfig(
            weights={f"#{index[id(w)]}": kind for w, kind in pairs},
            quantize_output=False, inner_ranges=True)
        return self._wrap(copy, config)

    def _wrap(self, layer, config):
        name = f"{self.prefix}{layer.name}"  # the layer's, also when a preserver wraps it
        for preserve in self.preservers:  # e.g. clustering, re-made from the shared values
            layer = preserve(layer, self.preserve_sparsity) or layer
        return QuantizeWrapper(layer, config, preserve_sparsity=self.preserve_sparsity, name=name)

    def _pairwise(self, layer, arity, quantize_output):
        """TFLite adds (multiplies) three or more tensors two at a time; each partial
        result needs a range, so the layer becomes a chain of two-input ones."""
        steps = [self._wrap(type(layer)(name=f"{layer.name}_{i}" if i else layer.name),
                            C.Default8BitQuantizeConfig(
                                quantize_output=quantize_output or i < arity - 2))
                 for i in range(arity - 1)]

        def run(inputs, **kwargs):
            x = inputs[0]
            for step, other in zip(steps, inputs[1:]):
                x = step([x, other], **kwargs)
            return x

        return run

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

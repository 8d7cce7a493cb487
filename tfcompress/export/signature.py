"""The serving signature every export shares: named inputs, dynamic batch, named outputs.

`prepare(model)` turns a model being compressed into the one to export:
`tfcompress.strip` bakes every training-time transform into the weights (a
pruned kernel's zeros) and keeps quantization-aware layers (their fake-quant
ops carry the int8 ranges).
`write(model, directory)` writes a SavedModel whose `serving_default`
signature takes one tensor per model input, named after that input, with a
dynamic batch dimension, and returns one tensor per model output, named after
that output. `tfcompress.export.to_saved_model` and `to_tflite` both build on
it, so a `.tflite` file and a SavedModel of the same model have the same
input and output names.

The signature is traced with `Flatten` and `Reshape` reshaping to a constant
shape (`-1` for the batch) where every other dimension is known. Keras 3
reshapes to the batch size read at run time, which the converter keeps as
SHAPE, STRIDED_SLICE, PACK and RESHAPE: four ops (and ~700 bytes in a small
file) where one RESHAPE does the same.
"""

import contextlib
import dataclasses
import math

import keras
import tensorflow as tf

from tfcompress.core import WeightWrapper, is_graph_model, strip
from tfcompress.core.strip import added_variables


@dataclasses.dataclass(frozen=True)
class InputInfo:
    """One model input: its signature `name`, `shape` (batch first, None = any) and `dtype`.

    Example:

    ```python
    import keras
    from tfcompress.export import signature
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2)])
    [info] = signature.inputs(model)   # InputInfo(name='x', shape=(None, 4), ...)
    ```
    """

    name: str
    shape: tuple
    dtype: str

    @property
    def sample_shape(self):
        """The shape of one sample (without the batch dimension)."""
        return self.shape[1:]


def check(model):
    """Fails with a clear message unless `model` is a built Sequential/functional model.

    Example:

    ```python
    from tfcompress import examples
    from tfcompress.export import signature
    signature.check(examples.digits_cnn())
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Export takes a keras.Model; got {type(model).__name__}. Wrap a "
            "layer in a model first, e.g. "
            "`keras.Sequential([keras.Input(shape), layer])`."
        )
    if not is_graph_model(model):
        raise ValueError(
            f"{type(model).__name__} is a subclassed model, so its input names "
            "and shapes are unknown to the exporter. Wrap it in a functional "
            "model with named inputs, e.g. `inputs = keras.Input((8, 8, 1), "
            "name='image'); export(keras.Model(inputs, model(inputs)))`."
        )
    try:
        defined = bool(model.built and model.inputs)
    except (AttributeError, ValueError):
        defined = False
    if not defined:
        raise ValueError(
            f"Model '{model.name}' has no defined inputs yet. Start it with "
            "`keras.Input(shape, name=...)` (or call `model.build(shape)`) "
            "before exporting."
        )


def prepare(model):
    """The model to export: `tfcompress.strip(model)` (transforms baked, QAT layers kept).

    Example:

    ```python
    import keras
    from tfcompress.export import signature
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert signature.prepare(model) is model  # nothing to strip
    ```
    """
    check(model)
    return strip(model)


def is_quantization_aware(model):
    """True when `model` holds quantization-aware (fake-quant) layers.

    Example:

    ```python
    import keras
    from tfcompress.export import signature
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert not signature.is_quantization_aware(model)
    ```
    """
    return any(
        getattr(layer, "quantization_aware", False)
        for layer in model._flatten_layers(include_self=True, recursive=True)
    )


def _structure(model):
    """('single' | 'list' | 'dict', {name: KerasTensor}) for a graph model."""
    if isinstance(model, keras.Sequential):
        return "single", {model.inputs[0].name: model.inputs[0]}
    struct = model.input
    if isinstance(struct, dict):
        return "dict", {str(key): tensor for key, tensor in struct.items()}
    if isinstance(struct, (list, tuple)):
        named = {tensor.name: tensor for tensor in struct}
        if len(named) != len(struct):
            raise ValueError(
                f"Model '{model.name}' has several inputs with the same name "
                f"{[t.name for t in struct]}; give each `keras.Input` a unique "
                "name, since the serving signature is keyed by input name."
            )
        return "list", named
    return "single", {struct.name: struct}


def inputs(model):
    """The model's inputs as a list of `InputInfo`, in signature order.

    Example:

    ```python
    from tfcompress import examples
    from tfcompress.export import signature
    names = [i.name for i in signature.inputs(examples.click_model())]
    ```
    """
    _, tensors = _structure(model)
    return [
        InputInfo(name, (None,) + tuple(tensor.shape[1:]), keras.backend.standardize_dtype(tensor.dtype))
        for name, tensor in tensors.items()
    ]


def to_model_inputs(model, arrays):
    """Arranges `{input name: array}` the way `model(...)` takes its inputs.

    Example:

    ```python
    import numpy as np
    from tfcompress import examples
    from tfcompress.export import signature
    model = examples.digits_cnn()
    out = model(signature.to_model_inputs(model, {"image": np.zeros((1, 8, 8, 1), "float32")}))
    ```
    """
    kind, tensors = _structure(model)
    if kind == "dict":
        return {name: arrays[name] for name in tensors}
    if kind == "list":
        return [arrays[name] for name in tensors]
    return arrays[next(iter(tensors))]


def name_outputs(model, outputs):
    """`{output name: tensor}` for the model's outputs (dict keys, else output names).

    Example:

    ```python
    import numpy as np
    from tfcompress import examples
    from tfcompress.export import signature
    model = examples.digits_cnn()
    named = signature.name_outputs(model, model(np.zeros((1, 8, 8, 1), "float32")))
    assert list(named) == ["logits"]
    ```
    """
    if isinstance(outputs, dict):
        return {str(key): value for key, value in outputs.items()}
    flat = keras.tree.flatten(outputs)
    names = getattr(model, "output_names", None)
    if isinstance(model, keras.Sequential):
        names = [_computing_layer(model.layers[-1]).name]
    elif getattr(model, "outputs", None):
        # An output layer wrapped for pruning or QAT keeps its own name, so
        # apps read the same output names from every export of a model.
        history = [getattr(t, "_keras_history", None) for t in model.outputs]
        if all(h is not None for h in history):
            names = [_computing_layer(h.operation).name for h in history]
    if not names or len(names) != len(flat) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(flat))]
    return dict(zip(names, flat))


def _computing_layer(layer):
    return layer.computing_layer() if isinstance(layer, WeightWrapper) else layer


def write(model, directory):
    """Writes the serving SavedModel of an already prepared `model` into `directory`.

    Example:

    ```python
    import tempfile
    import keras
    from tfcompress.export import signature
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2)])
    signature.write(model, tempfile.mkdtemp())
    ```
    """
    specs = {
        info.name: tf.TensorSpec(info.shape, info.dtype, name=info.name)
        for info in inputs(model)
    }

    def serve(features):
        outputs = model(to_model_inputs(model, features), training=False)
        return name_outputs(model, outputs)

    archive = keras.export.ExportArchive()
    archive.track(model)
    # Saved beside the weights, so a reader can tell the techniques' state
    # (QAT ranges) from the model's weights without going by names.
    added = added_variables(model)
    archive._tf_trackable.tfcompress_added_variables = [
        v for v in model.variables if id(v) in added]
    with _constant_reshapes():  # the endpoint may be traced as late as `write_out`
        archive.add_endpoint("serve", serve, input_signature=[specs])
        archive.write_out(directory, verbose=False)
    return directory


def _flatten(original):
    def call(layer, inputs):
        known = tuple(inputs.shape)[1:]
        if layer.data_format == "channels_first" and len(known) > 1 or not all(
                isinstance(d, int) and d > 0 for d in known):
            return original(layer, inputs)
        return keras.ops.reshape(inputs, (-1, math.prod(known)))
    return call


def _reshape(original):
    def call(layer, inputs):
        known, target = tuple(inputs.shape)[1:], list(layer.target_shape)
        if not all(isinstance(d, int) and d > 0 for d in known + tuple(t for t in target
                                                                       if t != -1)):
            return original(layer, inputs)
        if -1 in target:
            target[target.index(-1)] = math.prod(known) // math.prod(t for t in target if t != -1)
        return keras.ops.reshape(inputs, (-1, *target))
    return call


@contextlib.contextmanager
def _constant_reshapes():
    """While the signature is traced, `Flatten` and `Reshape` reshape to a constant shape."""
    patched = {keras.layers.Flatten: _flatten, keras.layers.Reshape: _reshape}
    originals = {cls: cls.call for cls in patched}
    try:
        for cls, make in patched.items():
            cls.call = make(originals[cls])
        yield
    finally:
        for cls, call in originals.items():
            cls.call = call

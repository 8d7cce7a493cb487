"""`shrink`: a model with the channels nobody reads removed, as plain smaller Keras layers."""

import keras
import numpy as np

from tfcompress.core import channels, hub
from tfcompress.core.clone import copy_layer
from tfcompress.core.graph import find, is_graph_model, rewrite
from tfcompress.core.strip import strip
from tfcompress.core.wrapper import WeightWrapper


def shrink(model):
    """A plain Keras model with every unread channel removed: smaller kernels, same outputs.

    Strips the model first (a structured-pruning mask becomes zeros), then,
    for every channel group (`tfcompress.core.channels`), removes the
    channels whose reading weights are all zero (the next kernel's input
    rows, through Flatten, Concatenate and residual Adds): the producing
    filters and biases, the BatchNormalization statistics and depthwise
    kernels on the way, and the reading rows go, and the layers are rebuilt
    with fewer `filters`/`units`/`output_dim`/`num_heads`/`intermediate_dim`.
    Outputs equal the masked model's up to float rounding. Each group keeps
    at least one channel. Layers and their names stay; a model with nothing
    to remove comes back stripped.

    Quantization-aware wrappers cannot be shrunk (their ranges are per
    channel): shrink first, then quantize.

    Example:

    ```python
    import keras, numpy as np
    import tfcompress as tfc
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
                              keras.layers.Dense(2, name="out")])
    kernel = model.get_layer("out").kernel
    kernel.assign(np.concatenate([np.zeros((3, 2)), np.ones((5, 2))]).astype("float32"))
    small = tfc.shrink(model)
    assert small.get_layer("hidden").units == 5
    ```
    """
    if not isinstance(model, keras.Model) or not is_graph_model(model):
        raise ValueError(
            "shrink takes a Sequential or functional keras Model; got "
            f"{type(model).__name__}.")
    model = strip(model)
    kept_wrappers = find(model, WeightWrapper)
    if kept_wrappers:
        raise ValueError(
            f"shrink got a model with {type(kept_wrappers[0]).__name__} layers "
            f"('{kept_wrappers[0].name}'), which keep per-channel state; shrink the float "
            "model first, then apply quantization-aware training to the shrunk model.")
    groups = channels.channel_groups(model)
    kept = {}
    for group in groups.values():
        if group.prunable:
            kept[group.name] = _read_channels(group)
    slices = _slices(groups, kept)
    if not slices:
        return model
    sizes = {}
    for group in groups.values():
        if group.name in kept and len(kept[group.name]) < group.size:
            for use in group.producers:
                key = group.config_key if group.config_key else channels.PRODUCERS.get(
                    type(use.op))
                if key:
                    sizes.setdefault(id(use.op), {})[key] = len(kept[group.name])
    small = _rebuild(model, slices, sizes)
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in small.layers if not isinstance(layer, keras.layers.InputLayer)]
        small = keras.Sequential([keras.Input(batch_shape=model.input_shape)] + layers,
                                 name=model.name)
    return small


def _read_channels(group):
    """Indices of the channels some `"in"` weight reads (non-zero), at least one."""
    read = np.zeros(group.size, bool)
    for use in group.uses:
        if use.role != "in":
            continue
        value = np.abs(keras.ops.convert_to_numpy(use.weight))
        axis = use.axis % value.ndim
        along = value.sum(axis=tuple(a for a in range(value.ndim) if a != axis))
        read |= (along[channels.positions(use.blocks, group.name)] != 0).any(axis=0)
    if not read.any():
        read[0] = True
    return np.flatnonzero(read)


def _slices(groups, kept):
    """`{id(weight): [(axis, indices)]}` for every weight that loses entries."""
    slices, seen = {}, set()
    for group in groups.values():
        for use in group.uses:
            key = (id(use.weight), use.axis)
            if key in seen:
                continue
            seen.add(key)
            names = use.groups
            if not any(g in kept and len(kept[g]) < groups[g].size for g in names):
                continue
            full = {g: kept.get(g, np.arange(groups[g].size)) for g in names}
            slices.setdefault(id(use.weight), []).append(
                (use.axis, channels.kept_indices(use.blocks, full)))
    return slices


def _sliced(weight, cuts):
    value = keras.ops.convert_to_numpy(weight)
    for axis, indices in cuts:
        value = np.take(value, indices, axis=axis)
    return value


def _reshape_keeping_channels(op):
    """A Reshape whose last axis is the channel axis follows the channels its input has."""
    made = {}

    def call(inputs, **kwargs):
        target = tuple(op.target_shape[:-1]) + (inputs.shape[-1],)
        if target not in made:
            made[target] = keras.layers.Reshape.from_config(
                {**op.get_config(), "target_shape": target})
        return made[target](inputs, **kwargs)

    return call


def _nested(op, slices, sizes):
    """A nested graph model, rebuilt for the (maybe fewer) channels its inputs now have."""
    made = []

    def call(*args, **kwargs):
        if not made:
            shapes = [tuple(t.shape) for t in keras.tree.flatten(args)]
            made.append(_rebuild(op, slices, sizes, shapes))
        return made[0](*args, **kwargs)

    return call


def _rebuild(model, slices, sizes, input_shapes=None):
    def replace(op):
        if isinstance(op, keras.Model) and is_graph_model(op):
            return _nested(op, slices, sizes)
        if isinstance(op, keras.layers.Reshape):
            return _reshape_keeping_channels(op)
        if not isinstance(op, keras.layers.Layer) or not any(
                id(w) in slices for w in op.weights):
            return copy_layer(op) if isinstance(op, keras.layers.Layer) else op
        cls, config = hub.rebuild(op, {**op.get_config(), **sizes.get(id(op), {})})
        new = cls.from_config(config)
        values = [_sliced(w, slices.get(id(w), ())) for w in op.weights]

        def call(*args, **kwargs):
            outputs = new(*args, **kwargs)
            new.set_weights(values)
            return outputs

        return call

    return rewrite(model, replace, input_shapes=input_shapes)

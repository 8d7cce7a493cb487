"""Wrapping and unwrapping the layers of Sequential and functional models.

Both directions rebuild the model graph with `keras.models.clone_model` and
give every layer of the new model its own copy of the weights, so the user's
original model is never changed by pruning or stripping it.
"""

import keras


def is_graph_model(model):
    """True for Sequential and functional models (the ones we can rebuild).

    Example:

    ```python
    import keras
    from tfcompress.core import is_graph_model
    assert is_graph_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    ```
    """
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def copy_layer(layer, weights=None):
    """A new layer with the same config and (built) weights as `layer`.

    Example:

    ```python
    import keras, numpy as np
    from tfcompress.core import copy_layer
    dense = keras.layers.Dense(2)
    dense.build((None, 4))
    twin = copy_layer(dense)
    assert twin is not dense and np.array_equal(twin.kernel, dense.kernel)
    ```
    """
    if isinstance(layer, keras.layers.Wrapper):
        # The config names the inner layer's class; a user's own class (not
        # registered with Keras) is passed along so the copy finds it.
        inner = {type(sub).__name__: type(sub) for sub in _wrapped_chain(layer)}
        with keras.saving.custom_object_scope(inner):
            new = type(layer).from_config(layer.get_config())
    else:
        new = type(layer).from_config(layer.get_config())
    if layer.built and not new.built:
        new.build_from_config(layer.get_build_config())
    if layer.built and len(new.weights) != len(layer.weights):
        _build_by_calling(new, layer)
    if layer.built:
        new.set_weights(layer.get_weights() if weights is None else weights)
    return new


def _build_by_calling(new, layer):
    """Builds `new` by calling it as `layer` was first called, on fresh symbolic inputs.

    Composite layers (keras-rs `FeatureCross`, layers with several inputs)
    often create their sublayers' weights only when called, which
    `build_from_config` does not do.
    """
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if not nodes:
        return
    arguments = nodes[0].arguments

    def fresh(value):
        if isinstance(value, keras.KerasTensor):
            return keras.KerasTensor(value.shape, value.dtype, sparse=value.sparse)
        return value

    args = keras.tree.map_structure(fresh, list(arguments.args))
    kwargs = keras.tree.map_structure(fresh, dict(arguments.kwargs))
    new(*args, **kwargs)


def _wrapped_chain(wrapper):
    """The layers inside a (possibly nested) keras Wrapper."""
    found, layer = [], wrapper
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
        found.append(layer)
    return found


def map_layers(model, fn):
    """Rebuilds a Sequential/functional `model`, replacing each layer by `fn(layer)`.

    `fn` returns a new layer; nested models are rebuilt recursively. Input
    layers and bare ops are kept. The new model is not compiled.

    Example: copy every layer, and give Dense layers no bias.

    ```python
    import keras
    from tfcompress.core import copy_layer, map_layers
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    def no_bias(layer):
        if isinstance(layer, keras.layers.Dense):
            return keras.layers.Dense.from_config({**layer.get_config(), "use_bias": False})
        return copy_layer(layer)
    assert all(not l.use_bias for l in map_layers(model, no_bias).layers)
    ```
    """
    def clone_fn(layer):
        if isinstance(layer, keras.layers.InputLayer) or not isinstance(
            layer, keras.layers.Layer
        ):
            return layer  # inputs, and bare ops (keras.ops calls) in the graph
        return fn(layer)

    # clone_model copies the compile state (and builds a fresh optimizer); the
    # result has different layers and weights, so it comes back uncompiled,
    # like TFMOT's. The flag is restored whatever happens.
    compiled = getattr(model, "compiled", False)
    model.compiled = False
    try:
        new = keras.models.clone_model(model, clone_function=clone_fn, recursive=True)
    finally:
        model.compiled = compiled
    if model.built and not new.built:
        new.build(model.input_shape)
    return new

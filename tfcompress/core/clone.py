"""Copying a layer with its config and weights, composite layers included.

Every rewrite (wrap, strip, quantize) gives each layer of the new model its
own copy of the weights, so the user's original model is never changed.
"""

import keras


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
    if layer.built and weights is not None:
        new.set_weights(weights)
    elif layer.built:
        _copy_values(new, layer)
    return new


def _copy_values(new, layer):
    """Each variable of `new` takes the value of `layer`'s, variable to variable (no numpy
    copy in between: a million-row table is not held three times)."""
    mine, theirs = new.weights, layer.weights
    if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
        new.set_weights(layer.get_weights())  # let Keras name the mismatch
        return
    for target, source in zip(mine, theirs):
        target.assign(source)


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

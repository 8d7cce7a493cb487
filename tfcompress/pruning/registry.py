"""Which weights of which layers are pruned.

Built-in layers are looked up by class (subclasses included); a custom layer
declares its own by implementing `PrunableLayer.get_prunable_weights`; any
layer can be opted in by naming weights explicitly (`weight_names=`).
"""

import keras

from tfcompress.core import rules

#: Built-in layers with weights, and the names of the weights pruned.
PRUNABLE = rules.KERNELS

#: Layers with weights that stay dense and pass through unwrapped.
PASSTHROUGH = rules.NORMALIZATION

SUPPORTED_NAMES = sorted(c.__name__ for c in PRUNABLE)


class PrunableLayer:
    """Mixin for custom layers that declare the weights to prune.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    class Scale(keras.layers.Layer, tfc.pruning.PrunableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],))

        def call(self, x):
            return x * self.w

        def get_prunable_weights(self):
            return [self.w]

    wrapped = tfc.pruning.prune_low_magnitude(Scale())
    ```
    """

    def get_prunable_weights(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_prunable_weights()."
        )


def lookup(layer):
    """Registered weight names for `layer`'s class, or None when unknown."""
    return rules.lookup(layer, PRUNABLE)


def _rule(layer):
    """The weights pruned in `layer` itself, or None when no rule names them."""
    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    names = lookup(layer)
    if names is None:
        return None
    return [w for w in layer.weights if w.name in names and w.trainable]


def has_rule(layer):
    """True when a rule covers `layer` or a sublayer of it (built or not).

    Example:

    ```python
    import keras
    from tfcompress.pruning import registry
    registry.has_rule(keras.layers.Dense(2))   # True
    ```
    """
    if hasattr(layer, "get_prunable_weights") or lookup(layer) is not None:
        return True
    return any(has_rule(sub) for sub in layer._flatten_layers(include_self=False,
                                                                recursive=False))


def split(layer):
    """`(weights to prune, variables no rule covers)` of a built `layer`, sublayers included.

    A layer with a rule (or `get_prunable_weights`) gives its rule's weights
    and stops there. Any other layer is searched through its sublayers, so a
    Dense inside a block inside a model's layer is pruned as it would be at
    top level; the layer's own trainable variables (from its `add_weight`)
    that no rule covers are returned second, to be reported and left dense.
    Normalization layers (`PASSTHROUGH`) give neither.

    Example:

    ```python
    import keras
    from tfcompress.pruning import registry
    block = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8),
                              keras.layers.LayerNormalization(), keras.layers.Dense(4)])
    pruned, left = registry.split(block)   # the two kernels; nothing left dense
    assert [w.name for w in pruned] == ["kernel", "kernel"] and left == []
    ```
    """
    return rules.split(layer, _rule, PASSTHROUGH)


def unsupported_error(layer):
    return ValueError(
        f"Layer '{layer.name}' of type {type(layer).__name__} has weights but "
        "tfcompress does not know which of them to prune (no sublayer of it has a "
        "rule either). Supported layers, also as sublayers of composite ones: "
        f"{', '.join(SUPPORTED_NAMES)}. To prune it, subclass "
        "tfcompress.pruning.PrunableLayer and implement get_prunable_weights(), "
        "or wrap it naming its weights: "
        "prune_low_magnitude(layer, weight_names=['kernel']). To leave it dense, "
        "prune the other layers only (prune_low_magnitude on each of them)."
    )


def prunable_weights(layer, weight_names=None):
    """The variables of a built `layer` to prune."""
    if weight_names is not None:
        names = tuple(weight_names)
    elif hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    else:
        names = lookup(layer)
        if names is None:
            pruned, _ = split(layer)
            if not pruned and any(w.trainable for w in layer.weights):
                raise unsupported_error(layer)
            return pruned
    found = [w for w in layer.weights if w.name in names]
    missing = set(names) - {w.name for w in found}
    if weight_names is not None and missing:
        raise ValueError(
            f"Layer '{layer.name}' has no weight named {sorted(missing)}; its "
            f"weights are {[w.name for w in layer.weights]}."
        )
    return [w for w in found if w.trainable]

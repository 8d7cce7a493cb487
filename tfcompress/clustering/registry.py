"""Which weights of which layers are clustered.

Built-in layers are looked up by class (subclasses included), the same
kernels TFMOT clusters; a custom layer declares its own with
`ClusterableLayer.get_clusterable_weights`; any layer can be opted in by
naming weights (`weight_names=`). Composite layers are searched through their
sublayers (`tfcompress.core.rules.split`).
"""

import keras

from tfcompress.core import rules

#: Built-in layers with weights, and the names of the weights clustered.
CLUSTERABLE = rules.KERNELS

#: Layers with weights that pass through unclustered.
PASSTHROUGH = rules.NORMALIZATION

SUPPORTED_NAMES = sorted(c.__name__ for c in CLUSTERABLE)


class ClusterableLayer:
    """Mixin for custom layers that declare the weights to cluster (TFMOT's interface).

    `get_clusterable_weights()` returns `[(name, variable), ...]`.

    Example:

    ```python
    import keras
    import tfcompress as tfc

    class Scale(keras.layers.Layer, tfc.clustering.ClusterableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 8), name="w")

        def call(self, x):
            return x @ self.w

        def get_clusterable_weights(self):
            return [("w", self.w)]

    wrapped = tfc.clustering.cluster_weights(Scale(), number_of_clusters=4)
    ```
    """

    def get_clusterable_weights(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_clusterable_weights().")


def _rule(layer):
    if hasattr(layer, "get_clusterable_weights"):
        return [w for _, w in layer.get_clusterable_weights()]
    names = rules.lookup(layer, CLUSTERABLE)
    if names is None:
        return None
    return [w for w in layer.weights if w.name in names and w.trainable]


def split(layer):
    """`(weights to cluster, trainable variables no rule covers)` of a built `layer`.

    Example:

    ```python
    import keras
    from tfcompress.clustering import registry
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert [w.name for w in registry.split(dense)[0]] == ["kernel"]
    ```
    """
    return rules.split(layer, _rule, PASSTHROUGH)


def has_rule(layer):
    """True when a rule covers `layer` or one of its sublayers."""
    if hasattr(layer, "get_clusterable_weights") or rules.lookup(layer, CLUSTERABLE) is not None:
        return True
    return any(has_rule(s) for s in layer._flatten_layers(include_self=False, recursive=False))


def clusterable_weights(layer, weight_names=None):
    """The variables of a built `layer` to cluster (`weight_names` overrides the rules)."""
    if weight_names is None:
        found, _ = split(layer)
        if not found and any(w.trainable for w in layer.weights) and not has_rule(layer):
            raise unsupported_error(layer)
        return found
    found = [w for w in layer.weights if w.name in weight_names]
    missing = set(weight_names) - {w.name for w in found}
    if missing:
        raise ValueError(f"Layer '{layer.name}' has no weight named {sorted(missing)}; its "
                         f"weights are {[w.name for w in layer.weights]}.")
    return found


def unsupported_error(layer):
    return ValueError(
        f"Layer '{layer.name}' of type {type(layer).__name__} has weights but tfcompress "
        "does not know which of them to cluster (no sublayer of it has a rule either). "
        f"Supported layers, also inside composite ones: {', '.join(SUPPORTED_NAMES)}. To "
        "cluster it, subclass tfcompress.clustering.ClusterableLayer and implement "
        "get_clusterable_weights(), or wrap it naming its weights: "
        "cluster_weights(layer, number_of_clusters=16, weight_names=['kernel']).")

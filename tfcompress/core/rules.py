"""Which weights of which layers a technique works on: one lookup, one descent.

A technique states its rules as a table `{layer class: what to do with it}`
(`lookup` matches subclasses too) and a function `rule(layer)` that returns
the items it covers in a layer (weights, or `(weight, setting)` pairs), or
None when it has no rule for that layer. `split` applies a rule to a layer
however deep: a composite layer (keras-rs `FeatureCross`, keras-hub
`TransformerEncoder`, a user's block) is searched through its sublayers, and
the trainable variables no rule covers are returned beside, to be reported.

`KERNELS` and `NORMALIZATION` are the tables pruning and clustering share:
the weights that hold a layer's parameters, and the layers left as they are.
"""

import keras

L = keras.layers

#: Built-in layers with weights, and the names of their main weights (the ones
#: pruning and clustering work on).
KERNELS = {
    L.Dense: ("kernel",),
    L.EinsumDense: ("kernel",),
    L.Conv1D: ("kernel",),
    L.Conv2D: ("kernel",),
    L.Conv3D: ("kernel",),
    L.Conv1DTranspose: ("kernel",),
    L.Conv2DTranspose: ("kernel",),
    L.Conv3DTranspose: ("kernel",),
    # Like TFMOT: accepted, kernel left as it is (few weights, large effect).
    # Opt in with weight_names=["kernel"].
    L.DepthwiseConv1D: (),
    L.DepthwiseConv2D: (),
    L.SeparableConv1D: ("pointwise_kernel",),
    L.SeparableConv2D: ("pointwise_kernel",),
    L.Embedding: ("embeddings",),
    L.LSTM: ("kernel", "recurrent_kernel"),
    L.GRU: ("kernel", "recurrent_kernel"),
    L.SimpleRNN: ("kernel", "recurrent_kernel"),
    L.MultiHeadAttention: ("kernel",),  # query, key, value and output projections
}

#: Layers with weights that stay as they are and pass through unwrapped.
NORMALIZATION = (L.BatchNormalization, L.LayerNormalization, L.GroupNormalization,
                 L.UnitNormalization, L.Normalization, L.PReLU)


def lookup(layer, table):
    """`table[cls]` for the first class of `layer`'s MRO in `table`, else None.

    Example:

    ```python
    import keras
    from tfcompress.core import rules
    table = {keras.layers.Dense: ("kernel",)}
    assert rules.lookup(keras.layers.Dense(2), table) == ("kernel",)
    ```
    """
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls]
    return None


def split(layer, rule, skip=()):
    """`(items rule gives inside layer, trainable variables no rule covers)`.

    `rule(layer)` returns a list for a layer it covers (and the search stops
    there), or None; layers of the classes in `skip` give neither (weights
    that stay as they are by design, e.g. normalization).

    Example:

    ```python
    import keras
    from tfcompress.core import rules

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.inner, self.outer = keras.layers.Dense(8), keras.layers.Dense(4)

        def build(self, shape):
            self.scale = self.add_weight(shape=(4,), name="scale")

        def call(self, x):
            return self.outer(self.inner(x)) * self.scale

    block = Block()
    block(keras.ops.ones((1, 3)))
    def kernels(layer):
        return [layer.kernel] if isinstance(layer, keras.layers.Dense) else None
    covered, left = rules.split(block, kernels)   # the two kernels; [scale]
    assert len(covered) == 2 and [v.name for v in left] == ["scale"]
    ```
    """
    found = rule(layer)
    if found is not None:
        return unique(found), []
    if isinstance(layer, skip):
        return [], []
    covered, left, inside = [], [], set()
    for sublayer in layer._flatten_layers(include_self=False, recursive=False):
        sub_covered, sub_left = split(sublayer, rule, skip)
        covered += sub_covered
        left += sub_left
        inside.update(id(w) for w in sublayer.weights)
    left += [w for w in layer.weights if w.trainable and id(w) not in inside]
    return unique(covered), unique(left)


def unique(items):
    """`items` without repeats, by identity of the variable (or of a pair's first element)."""
    seen, out = set(), []
    for item in items:
        key = id(item[0] if isinstance(item, tuple) else item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def relative_path(variable, layer):
    """`variable`'s path inside `layer` (`"dense_1/kernel"` in a composite, `"kernel"` in a Dense).

    Example:

    ```python
    import keras
    from tfcompress.core import rules
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert rules.relative_path(dense.kernel, dense) == "kernel"
    ```
    """
    prefix = (layer.path if hasattr(layer, "path") else layer.name) + "/"
    path = variable.path
    return path[len(prefix):] if path.startswith(prefix) else variable.name
